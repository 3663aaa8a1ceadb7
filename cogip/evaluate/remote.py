"""`--backend openai`: score a model behind an OpenAI-compatible chat-completions server (vLLM, SGLang,
`transformers serve`, a hosted API) with the benchmark loop's own plan, records, resume, metrics and plots.

Each item is one chat request: the image inline (a base64 data URL) and the item's prompt, greedy
(temperature 0). Requests go out `in_flight` at a time; the openai client retries a request on a connection
error, a time-out, 408, 409, 429 and 5xx, with exponential backoff (0.5 s doubling to 8 s, or the server's
Retry-After), `max_retries` times. An item is recorded when its answer arrives, so a run stopped by anything
(the server gone for longer than the retries wait, Ctrl-C) resumes where it stopped when rerun into the same
OUT. The key is read from an environment variable and never written anywhere.

Expected mode reads the score from the answer's top log-probabilities (`logprobs`, `top_logprobs`), as the
in-process scorer reads it from the full distribution (`cogip.evaluate.expected`): per number token, the
expected value over the number tokens of its digit count among the top K.
"""

from __future__ import annotations

import base64
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..data.images import check_images, open_image, raise_first
from ..dims import Dimension, get_dimension
from ..errors import CogipError
from ..parse import parse_answer
from .expected import read_number
from .loop import PlainEngine
from .scorer import Answer

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass
class ServerOptions:
    base_url: str                        # e.g. http://localhost:8000/v1
    model: str                           # the served model's name
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key (local servers take any)
    in_flight: int = 8
    max_retries: int = 8
    timeout: float = 120.0               # seconds for one request
    max_new_tokens: int = 24
    top_logprobs: int = 20               # expected mode; the OpenAI API's largest


def image_url(path: Path) -> str:
    """The image file as a data URL: its own bytes where it is a JPEG, PNG or WebP, else re-encoded as PNG."""
    from PIL import Image
    with Image.open(path) as im:
        fmt = im.format
    if fmt in MIME:
        data, mime = path.read_bytes(), MIME[fmt]
    else:
        import io
        buf = io.BytesIO()
        open_image(path).save(buf, "PNG")
        data, mime = buf.getvalue(), MIME["PNG"]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ServerModel:
    """The served model as the loop's scorer: `answer` one item, `check` the server before the loop."""

    def __init__(self, o: ServerOptions):
        from openai import OpenAI
        self.o = o
        key = os.environ.get(o.api_key_env) or "none"   # local servers want no key; the client wants one
        self.client = OpenAI(base_url=o.base_url, api_key=key, max_retries=o.max_retries, timeout=o.timeout)

    def run_info(self) -> dict:
        """What identifies the run (run.json): the served model, not where it is served from, so a run resumes
        against the same model moved to another address."""
        return {"backend": "openai", "model_id": self.o.model}

    def check(self) -> None:
        """The model is one the server serves (where the server lists its models)."""
        import openai
        try:
            served = [m.id for m in self.client.models.list()]
        except openai.NotFoundError:   # a server without /models: the first request says the rest
            return
        except openai.APIError as e:
            raise _error(e, self.o, "listing its models") from None
        if served and self.o.model not in served:
            raise CogipError(f"{self.o.base_url} serves {', '.join(served[:5])}, not {self.o.model!r} (--model)")

    def answer(self, image: Path, prompt: str, dim: Dimension, mode: str, item: str) -> Answer:
        import openai
        expected = mode == "expected"
        try:
            r = self.client.chat.completions.create(
                model=self.o.model, temperature=0, max_tokens=self.o.max_new_tokens,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url(image)}},
                                                       {"type": "text", "text": prompt}]}],
                **({"logprobs": True, "top_logprobs": self.o.top_logprobs} if expected else {}))
        except openai.APIError as e:
            raise _error(e, self.o, item) from None
        choice = r.choices[0]
        text = (choice.message.content or "").strip()
        parsed = parse_answer(text, dim)
        ans = Answer(text, parsed.label, parsed.score, parsed.ok, parsed.error)
        if expected:
            content = choice.logprobs.content if choice.logprobs else None
            if not content:
                raise CogipError(f"{self.o.base_url} returned no log-probabilities, which --mode expected reads "
                                 f"(transformers serve returns none; vLLM and SGLang do): use --mode generate")
            if parsed.ok:
                read_top_logprobs(ans, content, dim)
        return ans


def read_top_logprobs(ans: Answer, content: list, dim: Dimension) -> None:
    """Expected mode from an answer's per-token log-probabilities (`choice.logprobs.content`): the score over
    the number tokens among each step's top K, and the probability of the answer's label along its tokens."""
    import torch
    tokens = [c.token for c in content]
    digits = [len(t) if t.isascii() and t.isdigit() and len(t) <= 3 else 0 for t in tokens]

    def distribution(i: int, k: int):
        seen = {t.token: t.logprob for t in content[i].top_logprobs
                if t.token.isascii() and t.token.isdigit() and len(t.token) == k}
        seen.setdefault(content[i].token, content[i].logprob)
        values = torch.tensor([float(t) for t in seen], dtype=torch.float64)
        return values, torch.softmax(torch.tensor(list(seen.values()), dtype=torch.float64), -1)

    number = read_number(tokens, digits, distribution, dim)
    if number is not None:
        ans.score, ans.spread = number
    if ans.label:   # the label's probability along the answer's own tokens
        text, logp = "", 0.0
        for c in content:
            text += c.token
            logp += c.logprob
            if " ".join(text.lower().split()) == ans.label:
                ans.label_probs = {ans.label: round(math.exp(logp), 6)}
                break


def _error(e, o: ServerOptions, item: str) -> CogipError:
    import openai
    resume = "the answered items are kept; rerun the same command to go on"
    if isinstance(e, openai.APIConnectionError):   # time-outs too
        what = "timed out" if isinstance(e, openai.APITimeoutError) else "cannot connect"
        return CogipError(f"{o.base_url}: {what} ({item}) after {o.max_retries} retries: {resume}")
    status = getattr(e, "status_code", None)
    message = str(getattr(e, "message", e)).splitlines()[0][:200]
    if status == 401 or status == 403:
        return CogipError(f"{o.base_url} refused the key in ${o.api_key_env} ({status}: {message})")
    if status in (408, 409, 429) or (status or 0) >= 500:
        return CogipError(f"{o.base_url} still answers {status} ({item}) after {o.max_retries} retries "
                          f"({message}): {resume}")
    return CogipError(f"{o.base_url} refused {item} ({status}: {message})")


class ServerEngine(PlainEngine):
    """Answers from the server, `in_flight` requests at a time, each recorded as it arrives."""

    def answers(self, scorer: ServerModel, share, items, image_root, batch_size, mode, out, accelerator=None,
                check=None):
        raise_first(check_images(check or [], progress=False))
        scorer.check()
        self.out, self.accelerator, self.started = out, None, time.perf_counter()
        self.info = {"processes": 1, "backend": "openai", "base_url": scorer.o.base_url, "in_flight": scorer.o.in_flight,
                     "mode": mode}
        pending = iter(share)
        with ThreadPoolExecutor(scorer.o.in_flight) as pool:
            def submit():
                pair = next(pending, None)
                if pair is not None:
                    name, i = pair
                    it = items[name][i]
                    running[pool.submit(scorer.answer, Path(image_root) / it.image, it.prompt, get_dimension(name),
                                        mode, f"{name} item {i}")] = pair
            running = {}
            for _ in range(scorer.o.in_flight):
                submit()
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        pair = running.pop(future)
                        yield [pair], [future.result()]
                        submit()
            finally:   # an error or Ctrl-C: no new requests; those in flight end with the pool
                pending = iter(())
                for future in running:
                    future.cancel()
