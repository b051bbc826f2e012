// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title ProvenanceRegistry
/// @notice One entry per content hash (the SHA-256 of a certified file): who registered it, in
///         which block and when, and the IPFS CID of the file. Entries are write-once.
///         Batches: one Merkle root stands for many content hashes; the leaves are published on
///         IPFS (leavesCid) so anyone can rebuild every proof. Leaves are
///         keccak256(bytes.concat(keccak256(abi.encode(contentHash)))) and inner nodes hash sorted
///         pairs, as OpenZeppelin's MerkleProof and StandardMerkleTree do.
contract ProvenanceRegistry {
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

    address public owner;
    mapping(address => bool) public isWriter;
    mapping(bytes32 => Entry) private _entries;
    uint256 public count;
    mapping(bytes32 => Batch) private _batches;
    uint256 public batchCount;

    event Registered(bytes32 indexed contentHash, address indexed registrant, string cid);
    event BatchAnchored(bytes32 indexed root, address indexed registrant, string leavesCid, uint32 count);
    event WriterChanged(address indexed writer, bool allowed);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error NotWriter(address caller);
    error AlreadyRegistered(bytes32 contentHash);
    error EmptyHash();
    error EmptyCid();
    error EmptyBatch();
    error ZeroAddress();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        isWriter[msg.sender] = true;
        emit OwnershipTransferred(address(0), msg.sender);
        emit WriterChanged(msg.sender, true);
    }

    /// @notice Allow or forbid an address to register content.
    function setWriter(address writer, bool allowed) external onlyOwner {
        if (writer == address(0)) revert ZeroAddress();
        isWriter[writer] = allowed;
        emit WriterChanged(writer, allowed);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Register a content hash once, with the CID of the file.
    function register(bytes32 contentHash, string calldata cid) external {
        if (!isWriter[msg.sender]) revert NotWriter(msg.sender);
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
    function anchorBatch(bytes32 root, string calldata leavesCid, uint32 leafCount) external {
        if (!isWriter[msg.sender]) revert NotWriter(msg.sender);
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
