"""Chain settings, and opening the notary they point at: in process, by key, attached over JSON-RPC."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from pydantic import ValidationError

from cloud_hub.notary.chain import Web3Notary, open_notary
from cloud_hub.notary.errors import ChainUnavailableError, NotaryConfigError
from cloud_hub.notary.rpc import ChainReadServer
from cloud_hub.notary.settings import ChainSettings
from edgefleet.config import load_settings
from tests.services import free_port
from tests.unit.cloud_hub.notary.support import digest

KEY = "0x" + "4c" * 32
EXAMPLE = Path(__file__).resolve().parents[4] / "docs" / "edgefleet.example.toml"


def test_settings_validate_what_they_are_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ChainSettings().url is None
    assert ChainSettings(url="", contract_address="").contract_address is None
    with pytest.raises(ValidationError, match="not an Ethereum address"):
        ChainSettings(contract_address="0x1234")
    with pytest.raises(ValidationError, match="http"):
        ChainSettings(url="ws://127.0.0.1:8545")
    with pytest.raises(ValidationError, match="not both"):
        ChainSettings(private_key=KEY, private_key_file=tmp_path / "key")
    with pytest.raises(ValidationError):
        ChainSettings(confirmations=-1)
    monkeypatch.setenv("EDGEFLEET_CHAIN_PRIVATE_KEY", KEY)
    monkeypatch.setenv("EDGEFLEET_CHAIN_CONFIRMATIONS", "2")
    settings = ChainSettings()
    assert settings.confirmations == 2
    assert settings.private_key is not None and KEY not in repr(settings)


def test_in_process_by_default_and_signing_with_a_private_key(tmp_path: Path) -> None:
    key_file = tmp_path / "hub.key"
    key_file.write_text(KEY + "\n")
    notary = open_notary(ChainSettings(private_key_file=key_file))
    assert notary.owner == Account.from_key(KEY).address
    receipt = notary.commit_round(1, digest("root"), 3, digest("model"))
    assert receipt.gas_used > 0
    assert notary.get_round(1) is not None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ChainSettings(contract_address="0x" + "12" * 20), "needs a url"),
        (ChainSettings(private_key="0x1234"), "valid hex private key"),
        (ChainSettings(private_key_file=Path("/nonexistent/hub.key")), "cannot read"),
    ],
)
def test_settings_that_cannot_work_are_config_errors(settings: ChainSettings, message: str) -> None:
    with pytest.raises(NotaryConfigError, match=message):
        open_notary(settings)


def test_a_key_never_appears_in_an_error() -> None:
    secret = "0x" + "zz" * 32
    with pytest.raises(NotaryConfigError) as raised:
        open_notary(ChainSettings(private_key=secret))
    assert secret not in str(raised.value)


def test_attaching_over_json_rpc_reads_only(chain_notary: Web3Notary) -> None:
    chain_notary.commit_round(8, digest("root"), 4, digest("model"))
    with ChainReadServer(chain_notary) as server:
        settings = ChainSettings(url=server.url, contract_address=chain_notary.address)
        remote = open_notary(settings, read_only=True)
        assert remote.get_round(8) == chain_notary.get_round(8)
        assert remote.round_count() == 1
        with pytest.raises(NotaryConfigError, match="reads only"):
            remote.commit_round(9, digest("root"), 1, digest("model"))
        with pytest.raises(NotaryConfigError, match="no contract_address"):
            open_notary(ChainSettings(url=server.url))
        with pytest.raises(ChainUnavailableError, match="no contract at"):
            open_notary(ChainSettings(url=server.url, contract_address="0x" + "34" * 20), read_only=True)


def test_an_unreachable_node_is_chain_unavailable() -> None:
    settings = ChainSettings(url=f"http://127.0.0.1:{free_port()}", contract_address="0x" + "12" * 20, timeout_s=2)
    with pytest.raises(ChainUnavailableError, match="did not answer"):
        open_notary(settings, read_only=True)


def test_the_example_settings_file_has_a_valid_chain_table() -> None:
    settings = load_settings(ChainSettings, "chain", EXAMPLE)
    assert settings.url is None and settings.ledger_dir == Path("var/notary")


def test_attaching_to_a_contract_that_is_not_a_notary_is_refused(chain_notary: Web3Notary) -> None:
    w3 = chain_notary.w3
    # Init code that deploys ten zero bytes (STOP): code at the address, but no notary functions.
    tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[0], "data": "0x600a600c600039600a6000f3" + "00" * 10})
    address = w3.eth.get_transaction_receipt(tx_hash)["contractAddress"]
    assert address is not None and w3.eth.get_code(address)
    with pytest.raises(ChainUnavailableError, match="is not a notary"):
        Web3Notary.attach(w3, address, sender=None, compiled=chain_notary.compiled)
