// SPDX-License-Identifier: Apache-2.0
// An exact version: the committed artifacts are reproduced byte for byte, and a verifier compares
// the deployed code with them, so the compiler must never float.
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

/// @title ProvenanceRegistry
/// @notice One entry per content hash (the SHA-256 of a certified file): who registered it, in
///         which block and when, and the IPFS CID of the file. Entries are write-once.
///         Batches: one Merkle root stands for many content hashes; the leaves are published on
///         IPFS (leavesCid) so anyone can rebuild every proof. Leaves are
///         keccak256(bytes.concat(keccak256(abi.encode(contentHash)))) and inner nodes hash sorted
///         pairs, as OpenZeppelin's MerkleProof and StandardMerkleTree do.
///
///         The registry is also the trust root a verifier pins (chain id + this address): its owner
///         (an admin key kept apart from the hot writer key) publishes
///           - the writers, each with the block ranges in which it was allowed to write,
///           - the ECDSA P-256 signing keys (by key id = SHA-256 of the DER SubjectPublicKeyInfo),
///             each valid from the block it was published until the block it was revoked,
///           - the SHA-256 fingerprints of the C2PA trust anchors.
contract ProvenanceRegistry is Ownable2Step {
    using EnumerableSet for EnumerableSet.Bytes32Set;
    using EnumerableSet for EnumerableSet.AddressSet;

    struct Entry {
        address registrant;
        uint64 blockNumber;
        uint64 timestamp;
        string cid;
    }

    struct Batch {
        address registrant;
        uint64 blockNumber;
        uint64 timestamp;
        uint32 count;
        string leavesCid;
    }

    /// @dev A writer was allowed in [since, until); until == 0 while it still is.
    struct Range {
        uint64 since;
        uint64 until;
    }

    /// @dev A signing key is valid in [validFrom, revokedAt); revokedAt == 0 until revoked.
    struct SigningKey {
        bool published;
        uint64 validFrom;
        uint64 revokedAt;
    }

    mapping(bytes32 => Entry) private _entries;
    uint256 public count;
    mapping(bytes32 => Batch) private _batches;
    uint256 public batchCount;

    // Every range is kept (not only the last) so that a record written while a writer was allowed
    // stays verifiable after the writer is removed and allowed again.
    mapping(address => Range[]) private _writerRanges;
    EnumerableSet.AddressSet private _writers;
    mapping(bytes32 => SigningKey) private _keys;
    EnumerableSet.Bytes32Set private _trustAnchors;

    event Registered(bytes32 indexed contentHash, address indexed registrant, string cid);
    event BatchAnchored(bytes32 indexed root, address indexed registrant, string leavesCid, uint32 count);
    event WriterChanged(address indexed writer, bool allowed);
    event KeyPublished(bytes32 indexed keyId, uint64 blockNumber);
    event KeyRevoked(bytes32 indexed keyId, uint64 blockNumber);
    event TrustAnchorAdded(bytes32 indexed fingerprint, uint64 blockNumber);
    event TrustAnchorRemoved(bytes32 indexed fingerprint, uint64 blockNumber);

    error NotWriter(address caller);
    error AlreadyRegistered(bytes32 contentHash);
    error EmptyHash();
    error EmptyCid();
    error EmptyBatch();
    error ZeroAddress();
    error KeyAlreadyPublished(bytes32 keyId);
    error KeyNotPublished(bytes32 keyId);
    error KeyAlreadyRevoked(bytes32 keyId);
    error TrustAnchorAlreadyAdded(bytes32 fingerprint);
    error TrustAnchorNotFound(bytes32 fingerprint);
    error RenounceDisabled();

    modifier onlyWriter() {
        if (!isWriter(msg.sender)) revert NotWriter(msg.sender);
        _;
    }

    /// @param initialOwner the admin: manages writers, signing keys and trust anchors.
    /// @param writer the hot key that registers content; address(0) for none yet.
    constructor(address initialOwner, address writer) Ownable(initialOwner) {
        if (writer != address(0)) _setWriter(writer, true);
    }

    // --- admin (owner only) ---------------------------------------------------------------------

    /// @notice Allow or forbid an address to register content, from this block on.
    function setWriter(address writer, bool allowed) external onlyOwner {
        if (writer == address(0)) revert ZeroAddress();
        _setWriter(writer, allowed);
    }

    /// @notice Publish an ECDSA signing key: signatures by it count from this block on.
    function publishKey(bytes32 keyId) external onlyOwner {
        if (keyId == bytes32(0)) revert EmptyHash();
        if (_keys[keyId].published) revert KeyAlreadyPublished(keyId);
        _keys[keyId] = SigningKey(true, uint64(block.number), 0);
        emit KeyPublished(keyId, uint64(block.number));
    }

    /// @notice Revoke a signing key: it is not valid in this block or any later one.
    function revokeKey(bytes32 keyId) external onlyOwner {
        SigningKey storage k = _keys[keyId];
        if (!k.published) revert KeyNotPublished(keyId);
        if (k.revokedAt != 0) revert KeyAlreadyRevoked(keyId);
        k.revokedAt = uint64(block.number);
        emit KeyRevoked(keyId, uint64(block.number));
    }

    /// @notice Trust a C2PA root certificate, by the SHA-256 of its DER encoding.
    function addTrustAnchor(bytes32 fingerprint) external onlyOwner {
        if (fingerprint == bytes32(0)) revert EmptyHash();
        if (!_trustAnchors.add(fingerprint)) revert TrustAnchorAlreadyAdded(fingerprint);
        emit TrustAnchorAdded(fingerprint, uint64(block.number));
    }

    function removeTrustAnchor(bytes32 fingerprint) external onlyOwner {
        if (!_trustAnchors.remove(fingerprint)) revert TrustAnchorNotFound(fingerprint);
        emit TrustAnchorRemoved(fingerprint, uint64(block.number));
    }

    /// @notice Disabled: a registry without an owner could never revoke a compromised key.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceDisabled();
    }

    function _setWriter(address writer, bool allowed) private {
        Range[] storage ranges = _writerRanges[writer];
        bool current = ranges.length > 0 && ranges[ranges.length - 1].until == 0;
        if (allowed == current) return; // nothing changes: no new range, no event
        if (allowed) {
            ranges.push(Range(uint64(block.number), 0));
            _writers.add(writer);
        } else {
            ranges[ranges.length - 1].until = uint64(block.number);
            _writers.remove(writer);
        }
        emit WriterChanged(writer, allowed);
    }

    // --- writers ----------------------------------------------------------------------------------

    /// @notice Register a content hash once, with the CID of the file.
    function register(bytes32 contentHash, string calldata cid) external onlyWriter {
        if (contentHash == bytes32(0)) revert EmptyHash();
        if (bytes(cid).length == 0) revert EmptyCid();
        if (_entries[contentHash].registrant != address(0)) revert AlreadyRegistered(contentHash);
        _entries[contentHash] = Entry(msg.sender, uint64(block.number), uint64(block.timestamp), cid);
        unchecked {
            count += 1;
        }
        emit Registered(contentHash, msg.sender, cid);
    }

    /// @notice Anchor a Merkle root of many content hashes, with the CID of its published leaves.
    function anchorBatch(bytes32 root, string calldata leavesCid, uint32 leafCount) external onlyWriter {
        if (root == bytes32(0)) revert EmptyHash();
        if (bytes(leavesCid).length == 0) revert EmptyCid();
        if (leafCount == 0) revert EmptyBatch();
        if (_batches[root].registrant != address(0)) revert AlreadyRegistered(root);
        _batches[root] = Batch(msg.sender, uint64(block.number), uint64(block.timestamp), leafCount, leavesCid);
        unchecked {
            batchCount += 1;
        }
        emit BatchAnchored(root, msg.sender, leavesCid, leafCount);
    }

    // --- views: the trust root --------------------------------------------------------------------

    /// @notice True if `writer` may register content now.
    function isWriter(address writer) public view returns (bool) {
        Range[] storage ranges = _writerRanges[writer];
        return ranges.length > 0 && ranges[ranges.length - 1].until == 0;
    }

    /// @notice True if `writer` was allowed to register content in block `blockNumber`.
    function writerAt(address writer, uint64 blockNumber) external view returns (bool) {
        Range[] storage ranges = _writerRanges[writer];
        for (uint256 i = ranges.length; i > 0; --i) {
            Range storage r = ranges[i - 1];
            if (r.since <= blockNumber && (r.until == 0 || blockNumber < r.until)) return true;
        }
        return false;
    }

    /// @notice The addresses allowed to write now.
    function writers() external view returns (address[] memory) {
        return _writers.values();
    }

    /// @notice A signing key's record: revokedAt is 0 while it is not revoked.
    function signingKey(bytes32 keyId) external view returns (bool published, uint64 validFrom, uint64 revokedAt) {
        SigningKey storage k = _keys[keyId];
        return (k.published, k.validFrom, k.revokedAt);
    }

    /// @notice True if the key was published and not revoked in block `blockNumber`.
    function keyValidAt(bytes32 keyId, uint64 blockNumber) external view returns (bool) {
        SigningKey storage k = _keys[keyId];
        return k.published && k.validFrom <= blockNumber && (k.revokedAt == 0 || blockNumber < k.revokedAt);
    }

    function isTrustAnchor(bytes32 fingerprint) external view returns (bool) {
        return _trustAnchors.contains(fingerprint);
    }

    /// @notice The SHA-256 fingerprints of the C2PA trust anchors trusted now.
    function trustAnchors() external view returns (bytes32[] memory) {
        return _trustAnchors.values();
    }

    // --- views: content ---------------------------------------------------------------------------

    /// @notice What the registry holds for a batch root. `anchored` is false for an unknown root.
    function batch(bytes32 root)
        external
        view
        returns (bool anchored, address registrant, uint64 blockNumber, uint64 timestamp, uint32 leafCount, string memory leavesCid)
    {
        Batch storage b = _batches[root];
        return (b.registrant != address(0), b.registrant, b.blockNumber, b.timestamp, b.count, b.leavesCid);
    }

    /// @notice The Merkle leaf of a content hash.
    function leafOf(bytes32 contentHash) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(contentHash))));
    }

    /// @notice True if `contentHash` is registered on its own (root = 0, no proof) or is a leaf of an
    ///         anchored batch `root` (with its proof).
    function isRegistered(bytes32 contentHash, bytes32 root, bytes32[] calldata proof) public view returns (bool) {
        if (root == bytes32(0)) return _entries[contentHash].registrant != address(0);
        if (_batches[root].registrant == address(0)) return false;
        return MerkleProof.verifyCalldata(proof, root, leafOf(contentHash));
    }

    /// @notice Look a content hash up. `registered` is false for an unknown hash.
    function lookup(bytes32 contentHash)
        external
        view
        returns (bool registered, address registrant, uint64 blockNumber, uint64 timestamp, string memory cid)
    {
        Entry storage e = _entries[contentHash];
        return (e.registrant != address(0), e.registrant, e.blockNumber, e.timestamp, e.cid);
    }
}
