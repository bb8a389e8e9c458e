"The checks `make test` starts with, run on a copy of the real project."
import json
import subprocess
import sys

from minidl.devtools import out_of_sync_modules, run_checks, stale_readme, unclean_notebooks


def check(root):
    return subprocess.run([sys.executable, "-c", "import sys, minidl.devtools as d; sys.exit(d.run_checks())"], cwd=root, capture_output=True, text=True)


def test_project_passes_all_checks(project_copy):
    r = check(project_copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == 3


def test_hand_edit_of_package_fails_naming_notebook(project_copy):
    core = project_copy / "minidl" / "core.py"
    core.write_text(core.read_text() + "\nHAND_EDIT = 1\n")
    assert out_of_sync_modules(project_copy) == {"minidl/core.py": "nbs/00b_core.ipynb"}
    r = check(project_copy)
    assert r.returncode == 1
    assert "minidl/core.py: edit nbs/00b_core.ipynb" in r.stdout
    assert "HAND_EDIT = 1" in core.read_text()  # reported, not overwritten


def test_deleted_module_is_reported(project_copy):
    (project_copy / "minidl" / "core.py").unlink()
    assert "minidl/core.py" in out_of_sync_modules(project_copy)


def test_notebook_saved_with_execution_counts_fails(project_copy):
    nb_path = project_copy / "nbs" / "00b_core.ipynb"
    nb = json.loads(nb_path.read_text())
    next(c for c in nb["cells"] if c["cell_type"] == "code")["execution_count"] = 4
    nb_path.write_text(json.dumps(nb, indent=1))
    assert unclean_notebooks(project_copy) == ["nbs/00b_core.ipynb"]
    r = check(project_copy)
    assert r.returncode == 1 and "nbs/00b_core.ipynb" in r.stdout and "nbdev_clean" in r.stdout


def test_hand_edited_readme_fails(project_copy):
    readme = project_copy / "README.md"
    readme.write_text(readme.read_text() + "\nextra line\n")
    assert stale_readme(project_copy)
    assert run_checks(project_copy) == 1


def test_readme_shows_quickstart_and_lesson_map():
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "| 00a | [Gradients from scratch]" in text and "| 00b | [Core configuration]" in text
    for notebook in sorted((ROOT / "nbs").glob("[0-9]*.ipynb")):
        assert f"(nbs/{notebook.name})" in text, f"the lesson map does not link {notebook.name}"
