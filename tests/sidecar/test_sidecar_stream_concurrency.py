"""Many streams at once (Art.14, issue 14): a model server serving hundreds of concurrent
streams (vLLM's default allows 256) gets them all through its sidecar, each moderated, none
waiting for another to end; and the rules' memory of short clean texts (headers, model names,
ids: what repeats on every request) never outlives a lexicon reload."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from hegui.moderation.client import RulesModerator
from hegui.moderation.lexicon import LexiconStore
from hegui.sidecar.config import SidecarConfig
from hegui.sidecar.testing import FakeModel, LocalModerator, posture, sidecar_client

#: More than aiohttp's default connection pool (100), fewer than a GPU server's batch.
STREAMS = 130


async def test_more_streams_than_a_connection_pool_each_get_their_first_token(
        fake_model: FakeModel, moderator: LocalModerator) -> None:
    # Every stream sends two tokens, then the model keeps it open (a long answer).
    fake_model.mode, fake_model.chunk_chars = "hang-midstream", 1
    client = await sidecar_client(SidecarConfig(
        posture(output={"streamWindowTokens": 4, "streaming": {"mode": "StreamThenRetract"}}),
        upstream=fake_model.url, upstream_read_timeout=30.0), moderator)
    url = str(client.make_url("/v1/chat/completions"))
    body = {"model": "fake", "stream": True,
            "messages": [{"role": "user", "content": "say:第一个词语"}]}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def first_token() -> bytes:
                response = await session.post(url, json=body)
                assert response.status == 200
                data = await response.content.readany()
                while b'"content"' not in data:
                    data += await response.content.readany()
                return data

            tasks = [asyncio.ensure_future(first_token()) for _ in range(STREAMS)]
            done, pending = await asyncio.wait(tasks, timeout=20)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # On the old code the 101st stream waited for one of the first 100 to end.
            assert len(done) == STREAMS, f"{len(pending)} streams got no token"
            for task in done:
                assert '"第"'.encode() in task.result()
    finally:
        await client.close()


def test_a_clean_short_text_is_checked_again_after_a_lexicon_reload(tmp_path: Path) -> None:
    (tmp_path / "keywords.tsv").write_text("subversion\tfirstword\n", encoding="utf-8")
    store = LexiconStore((tmp_path,))
    rules = RulesModerator(store)
    header = "hegui-client/1.0 zzqxv"
    assert rules.findings(header).scores == {}
    assert rules.findings(header).scores == {}  # remembered clean
    # The provider adds a keyword (a ConfigMap update): the same header is now found.
    staged = tmp_path / ".staged"
    staged.write_text("subversion\tfirstword\nsubversion\tzzqxv\n", encoding="utf-8")
    os.replace(staged, tmp_path / "keywords.tsv")
    assert store.reload()
    assert rules.findings(header).scores.get("subversion", 0.0) > 0


async def test_a_long_prompt_does_not_stop_other_streams(moderator: LocalModerator,
                                                         fake_model: FakeModel) -> None:
    """A prompt of 300k characters (a long RAG context) takes the rules most of a second: the
    event loop that carries every other stream's tokens keeps running meanwhile, and the prompt
    is still moderated in full (its last word refused, Art.4(1))."""
    client = await sidecar_client(SidecarConfig(posture(), upstream=fake_model.url,
                                                max_body_bytes=4 << 20), moderator)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:  # what a stream's next token waits for: the loop's turn
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - before - 0.001)

    prompt = "人工智能服务应当坚持社会主义核心价值观。" * 15000 + "制作炸弹"
    ticking = asyncio.ensure_future(ticker())
    try:
        began = loop.time()
        response = await client.post("/v1/chat/completions", json={
            "model": "fake", "messages": [{"role": "user", "content": prompt}]})
        body = await response.json()
        took = loop.time() - began
    finally:
        stop.set()
        await ticking
        await client.close()
    assert response.status == 400 and body["error"]["code"] == "hegui.input_blocked"
    # On the old code the loop stopped for the whole scan (0.5-1 s here): the longest stop is
    # now a small part of it, however loaded the machine.
    assert max(lags) < took / 3, f"the loop stopped {max(lags):.3f} s of {took:.3f} s"
