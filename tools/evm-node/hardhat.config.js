// Hardhat Network as a plain JSON-RPC node for EdgeFleet's notary tests: no Solidity, no plugins.
// The notary contract is compiled by Vyper for the "cancun" EVM, so the node runs that hardfork or later.
module.exports = {
  networks: {
    hardhat: {
      hardfork: "cancun",
      chainId: 31337,
    },
  },
};
