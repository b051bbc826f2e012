// SPDX-License-Identifier: Apache-2.0
// Exact, as in ProvenanceRegistry.sol: the committed artifacts must be reproducible.
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ERC2981} from "@openzeppelin/contracts/token/common/ERC2981.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

interface IProvenanceRegistry {
    function isRegistered(bytes32 contentHash, bytes32 root, bytes32[] calldata proof) external view returns (bool);
}

/// @title ProvenanceNFT
/// @notice Certified works as ERC-721 tokens: a token can be minted only for content registered in
///         the ProvenanceRegistry (on its own, or in an anchored Merkle batch with a proof), one token
///         per content hash (the token id is the hash). tokenURI is ipfs://<metadata CID>.
///         ERC-2981 royalties; EIP-4906 metadata events (ERC721URIStorage).
///         Lazy minting: the service signs an EIP-712 voucher; the holder redeems it from their own
///         wallet and pays the gas. Vouchers expire and each nonce works once.
///         The owner (the admin key) manages minters and royalties; minters (the service's hot
///         key) mint and sign vouchers. Ownership moves in two steps (Ownable2Step).
contract ProvenanceNFT is ERC721URIStorage, ERC2981, EIP712, Ownable2Step {
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("MintVoucher(bytes32 contentHash,string metadataCid,address to,uint256 nonce,uint256 expiry)");

    IProvenanceRegistry public immutable registry;
    mapping(address => bool) public isMinter;
    mapping(uint256 => bool) public nonceUsed;
    /// @notice A token's own royalty receiver (e.g. a RoyaltySplitter); address(0): the default's.
    mapping(uint256 => address) public royaltyReceiverOf;

    event MinterChanged(address indexed minter, bool allowed);
    event TokenRoyaltyReceiver(uint256 indexed tokenId, address receiver);

    error NotMinter(address caller);
    error NotRegistered(bytes32 contentHash);
    error AlreadyMinted(bytes32 contentHash);
    error VoucherExpired(uint256 expiry);
    error VoucherUsed(uint256 nonce);
    error InvalidSigner(address signer);
    error NotVoucherHolder(address caller, address to);
    error EmptyCid();
    error RenounceDisabled();
    error RoyaltyReceiverLocked(uint256 tokenId);

    struct MintVoucher {
        bytes32 contentHash;
        string metadataCid;
        address to;
        uint256 nonce;
        uint256 expiry;
    }

    /// @param initialOwner the admin: manages minters and royalties.
    /// @param minter the hot key that mints and signs vouchers; address(0) for none yet.
    constructor(address registry_, address royaltyReceiver, uint96 royaltyBps, address initialOwner, address minter)
        ERC721("Provenance Certified Works", "PCW")
        EIP712("ProvenanceNFT", "1")
        Ownable(initialOwner)
    {
        registry = IProvenanceRegistry(registry_);
        if (minter != address(0)) {
            isMinter[minter] = true;
            emit MinterChanged(minter, true);
        }
        _setDefaultRoyalty(royaltyReceiver, royaltyBps);
    }

    function setMinter(address minter, bool allowed) external onlyOwner {
        isMinter[minter] = allowed;
        emit MinterChanged(minter, allowed);
    }

    function setDefaultRoyalty(address receiver, uint96 bps) external onlyOwner {
        _setDefaultRoyalty(receiver, bps);
    }

    /// @notice A minter names the royalty receiver of a token that is not minted yet (custodial or by
    ///         voucher): the split between the creators of the work's lineage and its certifier. The rate
    ///         stays the default's. Once the token exists its receiver is fixed: the hot key cannot redirect
    ///         the royalties of a token someone holds.
    function setTokenRoyaltyReceiver(uint256 tokenId, address receiver) external {
        if (!isMinter[msg.sender]) revert NotMinter(msg.sender);
        if (_ownerOf(tokenId) != address(0)) revert RoyaltyReceiverLocked(tokenId);
        royaltyReceiverOf[tokenId] = receiver;
        emit TokenRoyaltyReceiver(tokenId, receiver);
    }

    /// @notice ERC-2981: the default rate, paid to the token's own receiver when it has one.
    function royaltyInfo(uint256 tokenId, uint256 salePrice)
        public
        view
        override
        returns (address receiver, uint256 amount)
    {
        (receiver, amount) = super.royaltyInfo(tokenId, salePrice);
        address own = royaltyReceiverOf[tokenId];
        if (own != address(0)) receiver = own;
    }

    /// @notice Disabled: without an owner no minter could ever be removed.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceDisabled();
    }

    /// @notice Custodial mint by the service.
    function mint(address to, bytes32 contentHash, string calldata metadataCid, bytes32 root, bytes32[] calldata proof)
        external
        returns (uint256 tokenId)
    {
        if (!isMinter[msg.sender]) revert NotMinter(msg.sender);
        return _mintCertified(to, contentHash, metadataCid, root, proof);
    }

    /// @notice Redeem a voucher signed by a minter; the caller must be the voucher's `to`.
    function redeem(MintVoucher calldata voucher, bytes calldata signature, bytes32 root, bytes32[] calldata proof)
        external
        returns (uint256 tokenId)
    {
        if (msg.sender != voucher.to) revert NotVoucherHolder(msg.sender, voucher.to);
        if (block.timestamp > voucher.expiry) revert VoucherExpired(voucher.expiry);
        if (nonceUsed[voucher.nonce]) revert VoucherUsed(voucher.nonce);
        address signer = ECDSA.recover(_hashTypedDataV4(_voucherStructHash(voucher)), signature);
        if (!isMinter[signer]) revert InvalidSigner(signer);
        nonceUsed[voucher.nonce] = true;
        return _mintCertified(voucher.to, voucher.contentHash, voucher.metadataCid, root, proof);
    }

    /// @notice The EIP-712 digest a voucher is signed over (for wallets and tests).
    function voucherDigest(MintVoucher calldata voucher) external view returns (bytes32) {
        return _hashTypedDataV4(_voucherStructHash(voucher));
    }

    function _voucherStructHash(MintVoucher calldata v) private pure returns (bytes32) {
        return keccak256(
            abi.encode(VOUCHER_TYPEHASH, v.contentHash, keccak256(bytes(v.metadataCid)), v.to, v.nonce, v.expiry)
        );
    }

    function _mintCertified(
        address to,
        bytes32 contentHash,
        string calldata metadataCid,
        bytes32 root,
        bytes32[] calldata proof
    ) private returns (uint256 tokenId) {
        if (bytes(metadataCid).length == 0) revert EmptyCid();
        if (!registry.isRegistered(contentHash, root, proof)) revert NotRegistered(contentHash);
        tokenId = uint256(contentHash);
        if (_ownerOf(tokenId) != address(0)) revert AlreadyMinted(contentHash);
        _safeMint(to, tokenId);
        _setTokenURI(tokenId, string.concat("ipfs://", metadataCid));
    }

    function _baseURI() internal pure override returns (string memory) {
        return "";
    }

    function supportsInterface(bytes4 interfaceId) public view override(ERC721URIStorage, ERC2981) returns (bool) {
        return super.supportsInterface(interfaceId);
    }
}
