"""Two rotations racing for the write lock: the loser says it lost the race (exit 10), not that its key is wrong."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from keyrotate.errors import ExitCode
from keyrotate.rotation.verify import verify_database
from keyrotate.trek.keys import Key, create_key_file, generate_key_text

from .conftest import TrekCopy
from .test_lifecycle import REPO_ROOT, run_keyrotate

# Another rotation, to a key the second run does not know: it holds the write lock (inside its confirmation)
# until the test creates the "go" file, then commits.
WINNER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from keyrotate.rotation.options import RotateOptions
    from keyrotate.rotation.engine import rotate_database
    from keyrotate.trek.keys import Key

    db, go, old_key_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    old = Key(old_key_file.read_text().strip(), "old")
    winner = Key("the key the winning rotation moved to, 40 chars", "winner")

    def confirm(plan):
        print("holding the lock", flush=True)
        while not go.exists():
            time.sleep(0.02)
        return True

    rotate_database(RotateOptions(db, (old,), winner, None, allow_running=True), confirm=confirm)
    print("committed", flush=True)
""")


def test_a_rotation_that_lost_the_lock_race_exits_10(trek4: TrekCopy, tmp_path: Path) -> None:
    go = tmp_path / "go"
    new = tmp_path / "new.key"
    create_key_file(new, generate_key_text())
    winner = subprocess.Popen([sys.executable, "-c", WINNER, str(trek4.db), str(go),
                               str(trek4.data_dir / ".encryption_key")],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert winner.stdout is not None
        assert winner.stdout.readline().strip() == "holding the lock"
        loser = subprocess.Popen(
            [sys.executable, "-m", "keyrotate", "rotate", "--db", str(trek4.db), "--old-key-file",
             str(trek4.data_dir / ".encryption_key"), "--new-key-file", str(new), "--allow-running", "--wait", "30"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert loser.stderr is not None
        seen = ""
        while "Another program is writing" not in seen:  # (a warning about the key file may come first)
            line = loser.stderr.readline()
            assert line, seen
            seen += line
        go.touch()  # the winner commits while the loser waits for the lock
        _, rest = loser.communicate(timeout=60)
        err = seen + rest
        assert winner.wait(timeout=60) == 0, winner.stderr.read() if winner.stderr else ""
    finally:
        winner.kill()
        winner.wait()

    assert loser.returncode == ExitCode.DATABASE_BUSY, err
    assert "another program committed changes" in err and "probably another rotation ran" in err
    assert verify_database(trek4.db, [Key("the key the winning rotation moved to, 40 chars", "winner")]).ok


def test_a_wrong_key_without_a_race_still_exits_7(trek4: TrekCopy, tmp_path: Path) -> None:
    wrong, new = tmp_path / "wrong.key", tmp_path / "new.key"
    create_key_file(wrong, generate_key_text())
    create_key_file(new, generate_key_text())
    result = run_keyrotate(["rotate", "--db", str(trek4.db), "--old-key-file", str(wrong), "--new-key-file", str(new)])
    assert result.returncode == ExitCode.WRONG_KEY, result.stderr
