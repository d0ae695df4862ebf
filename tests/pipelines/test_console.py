"""`kiln run`'s console: steps and progress on the terminal, everything in the log file."""

import io

from kiln.pipelines.console import RunConsole

KFP_OUTPUT = """\
12:00:00.000 - INFO - Executing task \x1b[96m'ingest'\x1b[0m
    [KFP Executor 2026-11-21 12:00:00,100 INFO]: Looking for component `ingest` in --component_module_path
    {"executor_input": {"inputs": {"parameterValues": {"config_json": "{...}"}}}}
    [KFP Executor 2026-11-21 12:00:01,000 INFO]: ingest: 400 documents in, 380 kept
12:00:01.000 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
12:00:01.100 - INFO - Executing task 'pretrain'
    (RayTrainWorker pid=1) 2026-11-21 12:00:01,500 WARNING kiln.train: this run reads its data 20 times
    (RayTrainWorker pid=1) step 10/20 | loss 5.0 | ppl 148.4 | 900 tok/s
    (RayTrainWorker pid=1) step 10: val loss 4.9 (ppl 134.29)
    [KFP Executor 2026-11-21 12:00:02,000 WARNING]: tokens dir has no val split
    Traceback (most recent call last):
      File "train.py", line 1, in <module>
    ValueError: token shards hold 3 windows
12:00:03.000 - ERROR - Task 'pretrain' finished with status FAILURE
"""


def test_terminal_gets_steps_progress_and_the_failed_steps_error(tmp_path):
    out = io.StringIO()
    with RunConsole(tmp_path / "run.log", out) as console:
        for chunk in (KFP_OUTPUT[:37], KFP_OUTPUT[37:500], KFP_OUTPUT[500:]):  # any chunking
            console.write(chunk)
    shown = out.getvalue().splitlines()
    assert shown[0] == "▶ ingest"
    assert "    ingest: 400 documents in, 380 kept" in shown
    assert shown[2].startswith("✓ ingest (")
    assert "    step 10/20 | loss 5.0 | ppl 148.4 | 900 tok/s" in shown
    assert "    step 10: val loss 4.9 (ppl 134.29)" in shown
    assert "    WARNING: tokens dir has no val split" in shown
    assert "    WARNING: this run reads its data 20 times" in shown  # a worker's own warning
    failed = next(i for i, line in enumerate(shown) if line.startswith("✗ pretrain FAILURE"))
    assert "    ValueError: token shards hold 3 windows" in shown[failed:]
    assert shown[-1] == f"  (full log: {tmp_path / 'run.log'})"
    text = out.getvalue()
    assert "executor_input" not in text and "Looking for component" not in text
    assert (tmp_path / "run.log").read_text() == KFP_OUTPUT  # the file keeps every byte


def test_writes_after_close_pass_through(tmp_path):
    out = io.StringIO()
    console = RunConsole(tmp_path / "run.log", out)
    console.close()
    console.write("late log line\n")
    assert out.getvalue() == "late log line\n"
