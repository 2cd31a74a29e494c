# pragma version 0.4.3
# pragma evm-version cancun
"""
@title EdgeFleet notary
@notice One transaction per federated round: the Merkle root of the round's signed client updates, the
        leaf count and the new global model's sha256. Also anchors the model registry's model hashes.
        Leaves and inner nodes follow protocol/merkle.py: node = sha256(0x01 || left || right).
@dev Gas per round does not depend on the number of clients: only the root goes on chain.
     A round's leaf count, block number and timestamp share one storage word (three slots a round).
"""

MAX_PROOF_STEPS: constant(uint256) = 64
MASK_64: constant(uint256) = 2**64 - 1

event RoundCommitted:
    round_id: indexed(uint64)
    root: bytes32
    leaf_count: uint64
    model_hash: bytes32
    committer: indexed(address)

event ModelAnchored:
    model_id_hash: indexed(bytes32)
    digest: bytes32
    committer: indexed(address)

event NotaryChanged:
    account: indexed(address)
    allowed: bool

struct Round:
    root: bytes32
    model_hash: bytes32
    # leaf_count | block_number << 64 | timestamp << 128; zero while the round is not committed
    packed: uint256

struct Anchor:
    digest: bytes32
    # block_number | timestamp << 64
    packed: uint256

owner: public(address)
is_notary: public(HashMap[address, bool])
round_count: public(uint256)
anchor_count: public(uint256)

_rounds: HashMap[uint64, Round]
_anchors: HashMap[bytes32, Anchor]


@deploy
def __init__():
    self.owner = msg.sender


@internal
@view
def _only_notary():
    assert msg.sender == self.owner or self.is_notary[msg.sender], "notary: caller is not a notary"


@external
def set_notary(account: address, allowed: bool):
    """
    @notice Allow (or stop allowing) a hub account besides the owner to commit rounds and anchor models.
    """
    assert msg.sender == self.owner, "notary: caller is not the owner"
    self.is_notary[account] = allowed
    log NotaryChanged(account=account, allowed=allowed)


@external
def commit_round(round_id: uint64, root: bytes32, leaf_count: uint64, model_hash: bytes32):
    """
    @notice Notarize one federated round. A round id is committed once and never again.
    """
    self._only_notary()
    assert self._rounds[round_id].packed == 0, "notary: round already committed"
    assert root != empty(bytes32), "notary: empty root"
    assert leaf_count > 0, "notary: a round needs at least one leaf"
    packed: uint256 = convert(leaf_count, uint256) | (block.number << 64) | (block.timestamp << 128)
    self._rounds[round_id] = Round(root=root, model_hash=model_hash, packed=packed)
    self.round_count += 1
    log RoundCommitted(
        round_id=round_id, root=root, leaf_count=leaf_count, model_hash=model_hash, committer=msg.sender
    )


@external
def anchor_model(model_id_hash: bytes32, digest: bytes32):
    """
    @notice Anchor a registered model's sha256 under sha256(model id). A model id is anchored once.
    """
    self._only_notary()
    assert self._anchors[model_id_hash].packed == 0, "notary: model already anchored"
    assert digest != empty(bytes32), "notary: empty model hash"
    self._anchors[model_id_hash] = Anchor(digest=digest, packed=block.number | (block.timestamp << 64))
    self.anchor_count += 1
    log ModelAnchored(model_id_hash=model_id_hash, digest=digest, committer=msg.sender)


@external
@view
def get_round(round_id: uint64) -> (bytes32, uint64, bytes32, uint64, uint64):
    """
    @notice (root, leaf count, model hash, block number, timestamp); all zero for a round not committed.
    """
    stored: Round = self._rounds[round_id]
    return (
        stored.root,
        convert(stored.packed & MASK_64, uint64),
        stored.model_hash,
        convert((stored.packed >> 64) & MASK_64, uint64),
        convert((stored.packed >> 128) & MASK_64, uint64),
    )


@external
@view
def model_anchor(model_id_hash: bytes32) -> (bytes32, uint64, uint64):
    """
    @notice (model sha256, block number, timestamp); all zero for a model not anchored.
    """
    stored: Anchor = self._anchors[model_id_hash]
    return (
        stored.digest,
        convert(stored.packed & MASK_64, uint64),
        convert((stored.packed >> 64) & MASK_64, uint64),
    )


@external
@view
def verify_inclusion(round_id: uint64, leaf: bytes32, proof: DynArray[bytes32, MAX_PROOF_STEPS], sides: uint256) -> bool:
    """
    @notice True when `proof` leads from `leaf` to the committed root of `round_id`.
    @param sides Bit i set when the i-th sibling sits on the left.
    """
    root: bytes32 = self._rounds[round_id].root
    if root == empty(bytes32):
        return False
    node: bytes32 = leaf
    for i: uint256 in range(len(proof), bound=MAX_PROOF_STEPS):
        if (sides >> i) & 1 == 1:
            node = sha256(concat(b"\x01", proof[i], node))
        else:
            node = sha256(concat(b"\x01", node, proof[i]))
    return node == root
