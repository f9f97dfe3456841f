"""``optimize --apply`` writes only a drop-in it made: a link in place of ``velollm.conf`` or of its
``.bak``, or a drop-in VeloLLM did not write, is refused or replaced, never written through."""

from __future__ import annotations

from pathlib import Path

import pytest

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.schemas import ConfigChange, ConfigProposal
from velollm_core.tune import systemd
from velollm_core.tune.commands import apply_proposal

PROPOSAL = ConfigProposal(runtime="ollama", systemd_unit="ollama",
                          changes=[ConfigChange(key="OLLAMA_FLASH_ATTENTION", proposed="1", reason="faster")])


@pytest.fixture
def dropin(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "systemd"
    root.mkdir()
    (root / "ollama.service").write_text("[Service]\nExecStart=/usr/bin/ollama serve\n")
    monkeypatch.setenv(systemd.SYSTEMD_DIR_ENV, str(root))
    path = systemd.dropin_path("ollama")
    path.parent.mkdir()
    return path


def test_a_dropin_that_links_elsewhere_is_refused(dropin, tmp_path):
    precious = tmp_path / "precious.conf"
    precious.write_text("# the admin's own file\n")
    dropin.symlink_to(precious)
    with pytest.raises(UserInputError, match="symbolic link") as caught:
        apply_proposal(PROPOSAL, dry_run=False)
    assert "\n" not in str(caught.value)
    assert precious.read_text() == "# the admin's own file\n" and dropin.is_symlink()
    assert not dropin.with_name("velollm.conf.bak").exists()


def test_a_dropin_velollm_did_not_write_is_refused(dropin):
    dropin.write_text("[Service]\nEnvironment=\"OLLAMA_HOST=0.0.0.0\"\n")
    with pytest.raises(UserInputError, match="not a VeloLLM file"):
        apply_proposal(PROPOSAL, dry_run=False)
    assert "OLLAMA_HOST" in dropin.read_text()


def test_the_backup_replaces_a_link_instead_of_writing_through_it(dropin, tmp_path):
    assert apply_proposal(PROPOSAL, dry_run=False) == dropin
    first = dropin.read_text()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    backup = dropin.with_name("velollm.conf.bak")
    backup.symlink_to(victim)
    changed = PROPOSAL.model_copy(update={"changes": [ConfigChange(key="OLLAMA_FLASH_ATTENTION", proposed="0",
                                                                   reason="x")]})
    assert apply_proposal(changed, dry_run=False) == dropin
    assert victim.read_text() == "untouched\n"
    assert not backup.is_symlink() and backup.read_text() == first
