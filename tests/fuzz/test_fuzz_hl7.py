"""HL7 v2 under hostile input: the parser fails only with V2Error, every ACK is well formed,
and over MLLP every frame gets an ACK (AR/AE with a reason) and the connection stays usable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhirbridge.sources._v2map import V2Error, V2Limits, check_frame, read_adt
from fhirbridge.sources.hl7v2 import END, START, MllpListener, build_ack, split_messages
from fhirbridge.store import MemoryStore
from tests._builders.hl7 import FakeFhir, adt, fake_server, make_bridge, msa
from tests.fuzz._tally import TALLY, examples

DATA = Path(__file__).resolve().parents[1] / "data" / "hl7v2"
NOW = datetime(2026, 12, 24, 20, tzinfo=UTC)
SEEDS = [
    adt("A01"),
    adt("A03", pv1={45: "20261224150000-0500"}),
    adt("A08", pid={29: "20261224", 30: "Y"}),
    "MSH|ADT|SEKMET|||20260101||ADT^A01|X1|P|2.5\r",
    "MSH|^^^^ADT|X||||20260101||ADT^A01|X1|P|2.5\r",
    "MSH|\r",
    # the first message of each shipped sample (python-hl7 takes ~5 ms per small message)
    *(split_messages(p.read_bytes())[0].text for p in sorted(DATA.glob("*.hl7"))),
]
ALPHABET = "|^~\\&\r\n MSHPIDVEN0123456789A.-+\x00\x0b\xe9"


@st.composite
def messages(draw: st.DrawFn) -> str:
    """A real message (or a known bad one) with up to four random edits."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        insert = draw(st.text(alphabet=ALPHABET, max_size=12))
        text = text[:at] + insert + text[at + cut :]
    return text


@settings(max_examples=examples(400))
@given(text=messages())
def test_parser_fails_only_with_v2error_and_acks_are_well_formed(text: str) -> None:
    """Whatever the bytes, reading fails only with V2Error (AR or AE, with a reason), and the
    ACK for it is a parseable message with MSA carrying the code and the reason."""
    TALLY["hl7: messages parsed"] += 1
    for raw in split_messages(text.encode("utf-8", "surrogatepass")):
        code, reason = "AA", ""
        try:
            if raw.error:
                raise V2Error("", raw.error)
            check_frame(raw.text, V2Limits())
            read_adt(raw.text)
        except V2Error as exc:
            code, reason = exc.ack_code, exc.message
            assert code in ("AR", "AE") and reason
        ack = build_ack(raw, code, reason, NOW).decode()
        parsed = hl7.parse(ack)
        assert str(parsed.segment("MSA")(1)) == code
        if reason:
            assert str(parsed.segment("MSA")(3))


class Mllp:
    """An MLLP listener on the fake server, on an event loop of its own."""

    def __init__(self, fhir: FakeFhir) -> None:
        self.loop = asyncio.new_event_loop()
        self.bridge = make_bridge(fhir, MemoryStore())
        self.listener = MllpListener(self.bridge, process=False)
        self.port = self.loop.run_until_complete(self.listener.start("127.0.0.1", 0))

    async def _exchange(self, frames: list[bytes]) -> list[bytes | None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        answers: list[bytes | None] = []
        try:
            for frame in frames:
                writer.write(START + frame + END + b"\r")
                await writer.drain()
                try:
                    answers.append(await asyncio.wait_for(reader.readuntil(END + b"\r"), 10))
                except (asyncio.IncompleteReadError, ConnectionError):
                    answers.append(None)
                    break
        finally:
            writer.close()
            await writer.wait_closed()
        return answers

    def exchange(self, frames: list[bytes]) -> list[bytes | None]:
        """Send frames on one connection; the ACK for each (None: the connection closed)."""
        return self.loop.run_until_complete(self._exchange(frames))

    def close(self) -> None:
        """Stop the listener and close the loop."""
        self.loop.run_until_complete(self.listener.aclose())
        self.loop.run_until_complete(self.bridge.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def mllp() -> Iterator[Mllp]:
    """One listener for the module's examples."""
    served = Mllp(fake_server())
    yield served
    served.close()


@settings(max_examples=examples(200))
@given(text=messages())
def test_every_mllp_frame_gets_an_ack_and_the_connection_stays_usable(
    mllp: Mllp, text: str
) -> None:
    """A malformed frame is answered with AR/AE and a reason (or AA when it still reads as
    a message), and a valid message on the same connection afterwards gets AA."""
    frame = text.encode("utf-8", "surrogatepass").replace(END, b"")
    letters = len(mllp.bridge.store.dead_letters())
    hostile, after = mllp.exchange([frame, adt("A08").encode()])
    TALLY["mllp: frames"] += 1
    if hostile is None:
        TALLY["mllp: frames without an ACK"] += 1
    assert hostile is not None, f"no ACK for {frame[:80]!r}"
    answer = msa(hostile[1:-2].decode("utf-8"))
    assert answer[1] in ("AA", "AE", "AR")
    if answer[1] != "AA":
        if len(answer) < 4 or not answer[3]:
            TALLY["mllp: refusals without a reason"] += 1
        assert len(answer) > 3 and answer[3], f"no reason in {hostile!r}"
        assert len(mllp.bridge.store.dead_letters()) > letters
    assert after is not None and msa(after[1:-2].decode())[1] == "AA"
