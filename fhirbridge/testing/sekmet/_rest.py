"""Plain FHIR REST against the sekmet server, with the harness's own credentials."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from fhirbridge.testing.sekmet._errors import SekmetError
from fhirbridge.testing.sekmet._fhir import JSON


class RestCalls:
    """The plain REST calls of :class:`~fhirbridge.testing.sekmet.SekmetServer`.

    Expects the server to set :attr:`base_url`, :attr:`root_url`, an :class:`httpx.Client`
    and the harness's credentials (see ``_harness_credentials`` in ``_server``).
    """

    base_url: str
    root_url: str
    _http: httpx.Client
    _credentials: dict[str, str]
    _token: tuple[str, float] | None

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for the harness's credentials (empty when the server is open).

        Basic and static bearer credentials are used as configured; a SMART client with a
        ``client_secret`` gets a token from ``{root}/auth/token`` (client_secret_basic), renewed
        shortly before it expires.
        """
        kind = self._credentials.get("type", "none")
        if kind == "bearer":
            return {"Authorization": f"Bearer {self._credentials['token']}"}
        if kind == "basic":
            raw = f"{self._credentials['username']}:{self._credentials['password']}".encode()
            return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}
        if kind == "smart":
            return {"Authorization": f"Bearer {self._smart_token()}"}
        return {}

    def _smart_token(self) -> str:
        if self._token and self._token[1] > time.monotonic() + 10:
            return self._token[0]
        response = self._http.post(
            f"{self.root_url}/auth/token",
            data={"grant_type": "client_credentials", "scope": self._credentials["scope"]},
            auth=(self._credentials["client_id"], self._credentials["client_secret"]),
        )
        if response.status_code != 200:
            raise SekmetError(f"token request failed: HTTP {response.status_code} {response.text}")
        body = response.json()
        self._token = (str(body["access_token"]), time.monotonic() + float(body["expires_in"]))
        return self._token[0]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request to ``{base_url}/{path}`` (or an absolute URL) with credentials.

        Keyword arguments go to :meth:`httpx.Client.request`; extra ``headers`` are merged.
        The response is returned whatever its status.
        """
        url = (
            path
            if path.startswith(("http://", "https://"))
            else f"{self.base_url}/{path.lstrip('/')}"
        )
        headers = {
            "Accept": "application/fhir+json",
            **self.auth_headers(),
            **dict(kwargs.pop("headers", None) or {}),
        }
        return self._http.request(method, url, headers=headers, **kwargs)

    def _expect(self, response: httpx.Response, *codes: int) -> JSON:
        if response.status_code not in codes:
            raise SekmetError(
                f"{response.request.method} {response.request.url}: "
                f"HTTP {response.status_code}: {response.text[:800]}"
            )
        body = response.json()
        if not isinstance(body, dict):
            raise SekmetError(f"{response.request.url}: answer is not a JSON object")
        return body

    def read(self, resource_type: str, resource_id: str) -> JSON:
        """``GET [base]/{type}/{id}``; raises :class:`SekmetError` unless 200."""
        return self._expect(self.request("GET", f"{resource_type}/{resource_id}"), 200)

    def search(
        self,
        resource_type: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        max_pages: int = 50,
    ) -> list[JSON]:
        """Search and follow ``next`` links (sekmet pages by ``_offset``); matches only.

        Unknown search parameters make sekmet fail the search (the harness sends
        ``Prefer: handling=strict``) instead of silently ignoring them.
        """
        items = list(params.items()) if isinstance(params, Mapping) else list(params or [])
        response = self.request(
            "GET", resource_type, params=items, headers={"Prefer": "handling=strict"}
        )
        out: list[JSON] = []
        for _page in range(max_pages):
            bundle = self._expect(response, 200)
            out += [
                e["resource"]
                for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode", "match") == "match"
            ]
            nxt = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
                None,
            )
            if nxt is None:
                return out
            response = self.request("GET", nxt, headers={"Prefer": "handling=strict"})
        raise SekmetError(f"search {resource_type} has more than {max_pages} pages")

    def create(self, resource: Mapping[str, Any], *, if_none_exist: str | None = None) -> JSON:
        """``POST [base]/{type}`` (conditional with ``if_none_exist``); returns what was stored."""
        headers = {"Content-Type": "application/fhir+json"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self.request(
            "POST", str(resource["resourceType"]), json=dict(resource), headers=headers
        )
        return self._expect(response, 200, 201)

    def update(self, resource: Mapping[str, Any], *, if_match: bool = True) -> JSON:
        """``PUT [base]/{type}/{id}``, with ``If-Match`` on ``meta.versionId`` unless told not to.

        sekmet answers a stale ``If-Match`` with 412, raised here as :class:`SekmetError`.
        """
        headers = {"Content-Type": "application/fhir+json"}
        version = (resource.get("meta") or {}).get("versionId")
        if if_match and version:
            headers["If-Match"] = f'W/"{version}"'
        response = self.request(
            "PUT",
            f"{resource['resourceType']}/{resource['id']}",
            json=dict(resource),
            headers=headers,
        )
        return self._expect(response, 200, 201)

    def delete(self, resource_type: str, resource_id: str) -> None:
        """``DELETE [base]/{type}/{id}``; raises :class:`SekmetError` unless 200 or 204."""
        response = self.request("DELETE", f"{resource_type}/{resource_id}")
        if response.status_code not in (200, 204):
            raise SekmetError(
                f"DELETE {resource_type}/{resource_id}: HTTP {response.status_code}: "
                f"{response.text[:800]}"
            )

    def changed_since(self, mark: str, *, page: int = 1000) -> list[tuple[str, str]]:
        """``(type, id)`` of every resource that exists now and was created or changed at or
        after ``mark`` (a FHIR instant), newest change first, from the system history."""
        latest: dict[tuple[str, str], str] = {}  # the newest history entry's method wins
        offset = 0
        while True:
            params = {"_since": mark, "_count": str(page), "_offset": str(offset)}
            bundle = self._expect(self.request("GET", "_history", params=params), 200)
            entries = bundle.get("entry", [])
            for entry in entries:
                kind, _, rid = (
                    str(entry["fullUrl"]).removeprefix(self.base_url + "/").partition("/")
                )
                latest.setdefault((kind, rid), str(entry.get("request", {}).get("method", "PUT")))
            offset += page
            if not entries or offset >= int(bundle.get("total", 0)):
                return [key for key, method in latest.items() if method != "DELETE"]
