"""The round ledger keeps leaves exactly; notarizing a round and checking it against the chain."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cloud_hub.notary.chain import Web3Notary
from cloud_hub.notary.errors import LedgerError, RoundAlreadyCommittedError, RoundConflictError, RoundNotRecordedError
from cloud_hub.notary.gas import gas_per_round
from cloud_hub.notary.ledger import InMemoryRoundLedger, JsonLinesRoundLedger, RoundLedger
from cloud_hub.notary.memory import InMemoryNotary
from cloud_hub.notary.service import check_round, notarize_round
from protocol.merkle import verify_proof
from protocol.notary import InclusionProof
from tests.unit.cloud_hub.notary.support import digest, records


@pytest.fixture(params=["jsonl", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> RoundLedger:
    if request.param == "memory":
        return InMemoryRoundLedger()
    return JsonLinesRoundLedger(tmp_path / "notary")


def test_a_round_is_kept_as_recorded(ledger: RoundLedger) -> None:
    leaves = records(4)
    ledger.record_round(2, list(reversed(leaves)), digest("model"))
    stored = ledger.stored(2)
    assert stored is not None
    assert stored.leaves == leaves  # sorted by device id, byte for byte
    assert stored.model_hash == digest("model")
    assert ledger.leaves(2) == leaves
    assert ledger.stored(3) is None
    assert ledger.round_ids() == [2]
    with pytest.raises(RoundNotRecordedError):
        ledger.leaves(3)


def test_recording_again_is_a_no_op_and_other_content_is_refused(ledger: RoundLedger) -> None:
    ledger.record_round(1, records(3), digest("model"))
    ledger.record_round(1, list(reversed(records(3))), digest("model"))
    with pytest.raises(RoundConflictError):
        ledger.record_round(1, records(4), digest("model"))
    with pytest.raises(RoundConflictError):
        ledger.record_round(1, records(3), digest("another model"))
    assert ledger.leaves(1) == records(3)


def test_bad_rounds_are_refused(ledger: RoundLedger) -> None:
    with pytest.raises(LedgerError):
        ledger.record_round(1, [], digest("model"))
    with pytest.raises(LedgerError, match="more than one update from dev-000"):
        ledger.record_round(1, records(2) + records(1, salt="again"), digest("model"))
    assert ledger.round_ids() == []


def test_a_damaged_round_file_is_a_clear_error(tmp_path: Path) -> None:
    ledger = JsonLinesRoundLedger(tmp_path)
    ledger.record_round(5, records(3), digest("model"))
    path = ledger.path(5)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], '{"device_id": "dev-001"}', *lines[3:]]) + "\n")
    with pytest.raises(LedgerError, match="not a readable round record"):
        ledger.stored(5)
    path.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(LedgerError, match="says 3 leaves but holds 2"):
        ledger.stored(5)


def test_notarizing_gives_every_device_a_proof_the_chain_accepts(chain_notary: Web3Notary, tmp_path: Path) -> None:
    ledger = JsonLinesRoundLedger(tmp_path)
    leaves = records(7)
    notarized = notarize_round(chain_notary, ledger, 12, leaves, digest("global model 12"))
    assert notarized.receipt is not None and notarized.receipt.gas_used > 0
    assert set(notarized.proofs) == {leaf.device_id for leaf in leaves}
    committed = chain_notary.get_round(12)
    assert committed is not None and committed.root == notarized.root
    for device, proof in notarized.proofs.items():
        again = InclusionProof.model_validate_json(proof.model_dump_json())  # as sent to the device
        assert again.record.device_id == device
        again.check(committed)
        assert verify_proof(again.leaf, again.proof, committed.root)
        assert chain_notary.verify_inclusion(12, again.leaf, again.proof)
    assert check_round(chain_notary, ledger, 12).ok


def test_notarizing_again_after_a_crash_commits_nothing_new() -> None:
    notary, ledger = InMemoryNotary(), InMemoryRoundLedger()
    first = notarize_round(notary, ledger, 3, records(4), digest("model"))
    again = notarize_round(notary, ledger, 3, records(4), digest("model"))
    assert first.receipt is not None and again.receipt is None
    assert again.proofs == first.proofs
    # The same round id with other leaves is refused by the ledger; a chain that disagrees by the notary.
    with pytest.raises(RoundConflictError):
        notarize_round(notary, ledger, 3, records(5), digest("model"))
    notary.commit_round(4, digest("someone else's root"), 1, digest("model"))
    with pytest.raises(RoundAlreadyCommittedError):
        notarize_round(notary, InMemoryRoundLedger(), 4, records(2), digest("model"))


def test_checking_finds_a_tampered_leaf_a_missing_round_and_a_wrong_model(tmp_path: Path) -> None:
    notary, ledger = InMemoryNotary(), JsonLinesRoundLedger(tmp_path)
    notarize_round(notary, ledger, 1, records(5), digest("model"))
    assert check_round(notary, ledger, 1).ok

    path = ledger.path(1)
    lines = path.read_text().splitlines()
    leaf = json.loads(lines[3])
    leaf["update_digest"] = digest("a different update").hex()
    path.write_text("\n".join([*lines[:3], json.dumps(leaf), *lines[4:]]) + "\n")
    check = check_round(notary, ledger, 1)
    assert not check.ok
    assert any("root of the stored leaves" in problem for problem in check.problems)

    header = json.loads(lines[0])
    header["model_hash"] = digest("another model").hex()
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert any("model hash" in problem for problem in check_round(notary, ledger, 1).problems)

    missing = check_round(notary, ledger, 2)
    assert missing.problems == [
        "no leaves are recorded for round 2",
        f"round 2 is not committed on chain {notary.address}",
    ]
    ledger.record_round(3, records(2), digest("model"))
    assert check_round(notary, ledger, 3).problems == [f"round 3 is not committed on chain {notary.address}"]


def test_gas_per_round_is_flat_in_the_number_of_clients(chain_notary: Web3Notary) -> None:
    figures = gas_per_round((2, 10, 100))
    assert [figure.leaves for figure in figures] == [2, 10, 100]
    # Execution is identical; the total differs only by calldata (12 gas for each zero byte in a hash).
    assert len({figure.execution_gas for figure in figures}) == 1
    assert len({figure.gas_used - figure.calldata_gas for figure in figures}) == 1
    assert all(figure.gas_used < 120_000 for figure in figures)
    # The same on a contract that has seen rounds before (no warm-up needed).
    chain_notary.commit_round(1, digest("first"), 1, digest("model"))
    again = gas_per_round((2, 100), notary=chain_notary, first_round=10)
    assert {figure.execution_gas for figure in again} == {figures[0].execution_gas}


def test_two_writers_of_one_round_keep_the_first_and_refuse_a_different_second(tmp_path: Path) -> None:
    first, second = JsonLinesRoundLedger(tmp_path), JsonLinesRoundLedger(tmp_path)  # as two hub processes
    outcomes: list[str] = []

    def write(ledger: JsonLinesRoundLedger, salt: str) -> None:
        try:
            ledger.record_round(1, records(3, salt=salt), digest("model"))
            outcomes.append("recorded")
        except RoundConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(first, "")), threading.Thread(target=write, args=(second, "x"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "recorded"]
    assert first.round_ids() == [1] and not list(tmp_path.glob("*.partial"))
    second.record_round(1, first.leaves(1), digest("model"))  # the same content again: a no-op


def test_an_unwritable_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    with pytest.raises(LedgerError, match=r"cannot (read|record)"):
        JsonLinesRoundLedger(blocked).record_round(1, records(2), digest("model"))
