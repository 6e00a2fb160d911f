"""Talking to a model server through its contract: readiness, version, predictions.

Every failure says what was sent and what came back, so that a wrong ``[model]`` section is
found by reading the error, never by reading a traceback. Calls that bluegreen makes for its own
checks carry ``X-Bluegreen-Probe`` so that servers which honour it (the reference server does)
neither record them nor count them as user traffic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bluegreen.orchestrator.errors import ContractError
from bluegreen.orchestrator.model.contract import Contract, ContractMismatch, pointer

PROBE_HEADER = "X-Bluegreen-Probe"
CHUNK = 500  # rows per request: servers cap batch sizes (the reference server at 1,000)
SHOWN = 300  # characters of a body shown in an error


def clip(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[:SHOWN] + f"… ({len(text)} characters)"


class ModelClient:
    def __init__(self, base_url: str, contract: Contract, timeout: float = 10.0,
                 headers: dict[str, str] | None = None) -> None:
        import httpx

        self.base_url = base_url
        self.contract = contract
        # ``headers``: a fleet's route by Host header, when the client goes through the shared proxy
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: bytes | None = None, probe: str = "") -> tuple[int, bytes]:
        import httpx

        headers = {"Content-Type": "application/json"} if body is not None else {}
        if probe:
            headers[PROBE_HEADER] = probe
        try:
            response = self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            sent = f"\n  sent: {clip(body)}" if body else ""
            raise ContractError(f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}{sent}") from None
        return response.status_code, response.content

    def ready(self) -> tuple[bool, str]:
        """Whether the readiness path answers the expected status, and what it answered."""
        c = self.contract
        try:
            status, body = self.call("GET", c.path(c.ready_path))
        except ContractError as exc:
            return False, exc.message
        ok = status == c.ready_status
        return ok, f"GET {c.path(c.ready_path)} answered {status}" + ("" if ok else f": {clip(body)}")

    def version(self, image_label: Callable[[str], str | None] | None = None) -> str | None:
        """The version the server reports, by the contract's source; None when it is not checked."""
        c = self.contract
        if c.version_from == "none":
            return None
        if c.version_from == "label":
            if image_label is None:
                return None
            return image_label(c.version_label)
        path = c.path(c.version_path)
        status, body = self.call("GET", path)
        if status != 200:
            raise ContractError(f"GET {path} answered {status}: {clip(body)} (model.version_path)")
        try:
            value = pointer(json.loads(body), c.version_pointer, "version")
        except ValueError:
            raise ContractError(f"GET {path} did not answer JSON: {clip(body)}") from None
        except ContractMismatch as exc:
            raise ContractError(f"GET {path}: {exc} (model.version_pointer = {c.version_pointer!r}); "
                                f"it answered {clip(body)}") from None
        return str(value)

    def predict(self, rows: list[list[float]], columns: list[str], probe: str = "quality"
                ) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions for ``rows`` (and class probabilities when the contract reads them)."""
        values: list[Any] = []
        probabilities: list[list[float]] | None = [] if self.contract.probabilities else None
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            v, p = self._predict_chunk(chunk, columns, probe)
            values += v
            if probabilities is not None and p is not None:
                probabilities += p
        return values, probabilities

    def _predict_chunk(self, rows: list[list[float]], columns: list[str], probe: str
                       ) -> tuple[list[Any], list[list[float]] | None]:
        c = self.contract
        path = c.path(c.predict_path)
        body = c.body(rows, columns)
        status, answer = self.call("POST", path, body, probe)
        if status != 200:
            raise ContractError(f"POST {path} answered {status}: {clip(answer)}\n  sent: {clip(body)}"
                                "   (model.request)")
        try:
            doc = json.loads(answer)
        except ValueError:
            raise ContractError(f"POST {path} did not answer JSON: {clip(answer)}\n  sent: {clip(body)}") from None
        try:
            return c.read(doc, len(rows))
        except ContractMismatch as exc:
            raise ContractError(f"POST {path}: {exc}\n  sent: {clip(body)}\n  received: {clip(answer)}") from None
