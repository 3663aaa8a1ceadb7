"""`--backend openai` end to end against a real OpenAI-compatible server on localhost: `transformers serve`
(transformers' own) serving a tiny trained Qwen2.5-VL. The served answers against the in-process ones, the
expected mode's line where the server returns no log-probabilities, a server killed mid-run (restarted while
the client retries; and gone for good, then the run resumed), and the key kept out of every output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cogip.evaluate.loop import read_records
from test_failures import ROOT, eval_env, nothing_in, one_error_line

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
DIMS = ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability")
KEY = "sk-cogip-test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve MODEL` on a port, in its own process group (killed as a whole)."""

    def __init__(self, model: Path, port: int, log: Path):
        self.model, self.port, self.log, self.proc = model, port, log, None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/v1"

    def start(self) -> "Server":
        cli = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
        self.proc = subprocess.Popen([cli, "serve", str(self.model), "--port", str(self.port), "--device", "cpu"],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"transformers serve did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = Server(trained["qwen"], free_port(), log).start()
    yield server
    server.kill()


def served_env(bench, out, **extra) -> dict:
    return eval_env(bench, "", out, MIN_PIXELS="", MAX_PIXELS="", OPENAI_API_KEY=KEY, **extra)


def cog_test(server: Server, env: dict, *args, wait: bool = True):
    cmd = ["bash", str(ROOT / "evaluation/cog_test.sh"), "--backend", "openai", "--base-url", server.url,
           "--model", str(server.model), *map(str, args)]
    e = {k: v for k, v in os.environ.items()}
    e.update(NUM_GPUS="0", **{k: str(v) for k, v in env.items()})
    if wait:
        return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answered(out: Path) -> int:
    return sum(len((out / d / "records.jsonl").read_text().splitlines()) for d in DIMS
               if (out / d / "records.jsonl").is_file())


def wait_for_records(out: Path, n: int, proc) -> None:
    deadline = time.time() + 300
    while answered(out) < n:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "slow"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def baseline(served, trained, synth_bench, tmp_path_factory):
    """The whole bench through the server, and in process (the Qwen launcher, the processor's own image size)."""
    out = tmp_path_factory.mktemp("served_baseline")
    run = cog_test(served, served_env(synth_bench, out / "served"))
    assert run.returncode == 0, run.stderr[-3000:]
    local = subprocess.run(["bash", str(ROOT / "evaluation/qwen/cog_test.sh")], capture_output=True, text=True,
                           env={**os.environ, **{k: str(v) for k, v in eval_env(
                               synth_bench, trained["qwen"], out / "local", NUM_GPUS=0).items()}})
    assert local.returncode == 0, local.stderr[-3000:]
    return out / "served", out / "local", run


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_served_answers_are_the_in_process_answers(served, baseline):
    server, (served, local, run) = served, baseline
    n = 0
    for dim in DIMS:
        s, l = read_records(served / dim), read_records(local / dim)
        assert set(s) == set(l) and len(s) == 8   # the synthetic bench's test items
        for i in s:
            assert (s[i]["answer"], s[i]["score"], s[i]["label"]) == (l[i]["answer"], l[i]["score"], l[i]["label"])
            n += s[i]["ok"]
        assert json.loads((served / dim / "run.json").read_text())["backend"] == "openai"
    assert n >= 24   # a model that answers: the comparison is of parsed scores, not of failures
    assert summary(served) == summary(local)
    timing = json.loads((served / "timing.json").read_text())
    assert timing["items"] == 32 and timing["in_flight"] == 8 and timing["base_url"] == server.url
    # the key: in no output file and not in the console
    assert KEY not in run.stdout + run.stderr
    assert all(KEY not in p.read_text(errors="replace") for p in served.rglob("*") if p.is_file())


def test_expected_mode_says_the_server_returns_no_log_probabilities(served, synth_bench, tmp_path):
    run = cog_test(served, served_env(synth_bench, tmp_path / "out", MODE="expected"))
    one_error_line(run, "returned no log-probabilities", "--mode generate")
    assert nothing_in(tmp_path / "out")


def test_a_model_the_server_does_not_serve_is_one_line(served, synth_bench, tmp_path):
    run = cog_test(served, served_env(synth_bench, tmp_path / "out"), "--model", "someone/else")
    one_error_line(run, f"serves {served.model}", "'someone/else'")
    assert nothing_in(tmp_path / "out")


def test_a_server_killed_mid_run_loses_nothing(trained, synth_bench, baseline, tmp_path):
    """Restarted while the client retries: the run goes on. Gone past the retries: the run stops in one line,
    keeping what was answered; rerun once the server is back (at another port), it answers only the rest. Each item is
    answered once, and the results are the uninterrupted run's."""
    server = Server(trained["qwen"], free_port(), tmp_path / "serve.log").start()
    try:
        out = tmp_path / "restarted"
        proc = cog_test(server, served_env(synth_bench, out), "--in-flight", 2, "--max-retries", 12, wait=False)
        wait_for_records(out, 8, proc)
        server.kill()
        assert answered(out) < 32 and proc.poll() is None   # killed mid-run
        server.start()
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
        assert answered(out) == 32 and summary(out) == summary(baseline[0])

        out = tmp_path / "resumed"
        proc = cog_test(server, served_env(synth_bench, out), "--in-flight", 2, "--max-retries", 1, wait=False)
        wait_for_records(out, 8, proc)
        server.kill()
        _, err = proc.communicate(timeout=120)
        stopped = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
        one_error_line(stopped, "cannot connect", "rerun the same command")
        first = answered(out)
        assert 8 <= first < 32
        server.port = free_port()   # back at another address: the same model, so the same run
        server.start()
        run = cog_test(server, served_env(synth_bench, out), "--in-flight", 2)
        assert run.returncode == 0, run.stderr[-3000:]
        assert answered(out) == 32 and summary(out) == summary(baseline[0])
    finally:
        server.kill()


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_expected_mode_from_top_log_probabilities_is_the_in_process_reading(trained, synth_bench, family):
    """Servers that return log-probabilities (vLLM, SGLang, OpenAI) give them per answer token as text with its
    top K alternatives: fed a trained model's own, read as `--backend openai` reads them, they give the
    in-process expected scores and label probabilities when K covers the number tokens (single digits for
    Qwen, 1-3-digit tokens for Llama 3), and a score in range from 20 alternatives."""
    from openai.types.chat import ChatCompletionTokenLogprob
    from openai.types.chat.chat_completion_token_logprob import TopLogprob
    from cogip.data.images import open_image
    from cogip.data.layout import read_test_messages
    from cogip.dims import get_dimension
    from cogip.evaluate.remote import read_top_logprobs
    from cogip.evaluate.scorer import Answer, Scorer
    scorer = Scorer.load(str(trained[family]), min_pixels=7056, max_pixels=7056)
    tok, dim = scorer.tokenizer, get_dimension("Aesthetics")
    items = read_test_messages(synth_bench / "test_msg_file/Aesthetics/Aesthetics_messages.json",
                               synth_bench / "test_msg_file/Aesthetics/Aesthetics_scores.json", "Aesthetics")
    batch = scorer.prepare([open_image(synth_bench / "cognition/cognition_images" / it.image) for it in items],
                           [it.prompt for it in items])
    answers = scorer.answer_prepared(batch, dim, "expected")
    new, logits = scorer._generate(batch, with_scores=True)
    logp = logits.log_softmax(-1)
    stop = scorer._end_ids()
    read = 0
    for b, a in enumerate(answers):
        if not a.ok:
            continue
        ids = new[b].tolist()
        ids = ids[:next((i for i, t in enumerate(ids) if t in stop), len(ids))]
        for k in (logp.shape[-1], 20):
            top = logp[b, :len(ids)].topk(k, -1).indices
            content = [ChatCompletionTokenLogprob(
                token=tok.decode([t]), logprob=logp[b, i, t].item(), bytes=None,
                top_logprobs=[TopLogprob(token=tok.decode([u]), logprob=logp[b, i, u].item(), bytes=None)
                              for u in top[i].tolist()]) for i, t in enumerate(ids)]
            served = Answer(a.text, a.label, a.score, a.ok)
            read_top_logprobs(served, content, dim)
            if k == 20:
                assert dim.low <= served.score <= dim.high and served.spread is not None
                continue
            assert served.score == pytest.approx(a.score, abs=1e-4) and served.spread == pytest.approx(a.spread, abs=1e-4)
            assert served.label_probs[a.label] == pytest.approx(a.label_probs[a.label], abs=1e-5)
            read += 1
    assert read >= 4
