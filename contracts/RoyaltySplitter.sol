// SPDX-License-Identifier: Apache-2.0
// Exact, as in ProvenanceRegistry.sol: the committed artifacts must be reproducible.
pragma solidity 0.8.37;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title RoyaltySplitter
/// @notice The ERC-2981 royalty receiver of a certified work whose lineage names creators: it takes the
///         royalty payments in ETH and lets each payee withdraw its share. It follows OpenZeppelin 4.x's
///         audited PaymentSplitter (removed in OpenZeppelin 5), ETH part only: payees and shares are fixed
///         at construction; every payment received is split in proportion to the shares; payments are
///         pulled (`release`), never pushed, so no payee can block another and there is no payout loop.
///         A payee's due is floor(totalReceived * shares / totalShares) - released: the rounding dust stays
///         in the contract and is paid out as later payments arrive.
///         ERC-20 tokens sent here are not handled (the service's royalty is paid in ETH).
contract RoyaltySplitter is ReentrancyGuardTransient {
    event PayeeAdded(address indexed account, uint256 shares);
    event PaymentReceived(address indexed from, uint256 amount);
    event PaymentReleased(address indexed to, uint256 amount);

    error NoPayees();
    error LengthMismatch(uint256 payees, uint256 shares);
    error ZeroAddress();
    error ZeroShares(address account);
    error DuplicatePayee(address account);
    error NotPayee(address account);
    error NothingDue(address account);

    uint256 public immutable totalShares;
    uint256 public totalReleased;
    mapping(address => uint256) public shares;
    mapping(address => uint256) public released;
    address[] private _payees;

    /// @param payees_ who is paid (distinct, non-zero).
    /// @param shares_ each payee's weight (non-zero); a payee receives shares / totalShares of every payment.
    constructor(address[] memory payees_, uint256[] memory shares_) payable {
        if (payees_.length == 0) revert NoPayees();
        if (payees_.length != shares_.length) revert LengthMismatch(payees_.length, shares_.length);
        uint256 total = 0;
        for (uint256 i = 0; i < payees_.length; i++) {
            address account = payees_[i];
            if (account == address(0)) revert ZeroAddress();
            if (shares_[i] == 0) revert ZeroShares(account);
            if (shares[account] != 0) revert DuplicatePayee(account);
            _payees.push(account);
            shares[account] = shares_[i];
            total += shares_[i];
            emit PayeeAdded(account, shares_[i]);
        }
        totalShares = total;
    }

    /// @notice Royalty payments arrive here (a plain ETH transfer; the event records who paid).
    receive() external payable {
        emit PaymentReceived(msg.sender, msg.value);
    }

    /// @notice The payee at `index` (in the order of the constructor).
    function payee(uint256 index) external view returns (address) {
        return _payees[index];
    }

    /// @notice How many payees there are.
    function payeeCount() external view returns (uint256) {
        return _payees.length;
    }

    /// @notice What `account` can withdraw now.
    function releasable(address account) public view returns (uint256) {
        uint256 totalReceived = address(this).balance + totalReleased;
        return (totalReceived * shares[account]) / totalShares - released[account];
    }

    /// @notice Pay `account` what is due to it; anyone may call it (the ETH goes to `account` only).
    function release(address payable account) external nonReentrant {
        if (shares[account] == 0) revert NotPayee(account);
        uint256 payment = releasable(account);
        if (payment == 0) revert NothingDue(account);
        // Effects before the transfer (checks-effects-interactions), as in PaymentSplitter.
        totalReleased += payment;
        released[account] += payment;
        emit PaymentReleased(account, payment);
        Address.sendValue(account, payment);
    }
}
