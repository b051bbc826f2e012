// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ProvenanceRegistry
/// @notice One entry per content hash (the SHA-256 of a certified file): who registered it, in
///         which block and when, and the IPFS CID of the file. Entries are write-once.
contract ProvenanceRegistry {
    struct Entry {
        address registrant;
        uint64 blockNumber;
        uint64 timestamp;
        string cid;
    }

    address public owner;
    mapping(address => bool) public isWriter;
    mapping(bytes32 => Entry) private _entries;
    uint256 public count;

    event Registered(bytes32 indexed contentHash, address indexed registrant, string cid);
    event WriterChanged(address indexed writer, bool allowed);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error NotWriter(address caller);
    error AlreadyRegistered(bytes32 contentHash);
    error EmptyHash();
    error EmptyCid();
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
