"""A person's browser, as far as an authorization server's pages need one: cookies, redirects,
and forms filled and submitted as shown (hidden fields kept, text fields typed in).

Why not a headless Chromium: the provider's pages are plain HTML forms; a real HTTP client that
follows them exactly (the provider's own form actions, fields and cookies) is what a browser does
there, at a fraction of the cost. ``approve_device`` enters the user code, signs in (the
provider's development login takes any name) and confirms the consent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx2


@dataclass
class Form:
    id: str | None
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    typed: list[str] = field(default_factory=list)
    """Names of the visible inputs (text, email, password) a person types into."""


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(a.get("id"), a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._open)
        elif tag == "input":
            form = next((f for f in self.forms if f.id and f.id == a.get("form")), self._open)
            if form is None or not a.get("name"):
                return
            kind = a.get("type", "text")
            form.fields[a["name"]] = a.get("value", "")
            if kind in ("text", "email", "password"):
                form.typed.append(a["name"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def forms_of(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def _submit(client: httpx2.Client, page: httpx2.Response, typed: dict[str, str]) -> httpx2.Response:
    forms = [f for f in forms_of(page.text) if "abort" not in f.fields and "abort" not in f.action]
    assert forms, f"no form to submit on {page.url}: {page.text[:300]}"
    form = forms[0]
    data = dict(form.fields)
    for name in form.typed:
        data[name] = typed.get(name, typed.get("*", "tester"))
    target = urljoin(str(page.url), form.action or str(page.url))
    if form.method == "post":
        return client.post(target, data=data)
    return client.get(target, params=data)


def sign_in(url: str, typed: dict[str, str] | None = None, steps: int = 6) -> str:
    """Open ``url`` and submit each page's form (sign in with any name, consent) until a page has
    none; the final page's text (a loopback redirect's answer is such a page)."""
    fields = {"login": "tester", "password": "secret", **(typed or {})}
    with httpx2.Client(follow_redirects=True, timeout=10) as client:
        page = client.get(url)
        for _ in range(steps):
            if not forms_of(page.text) or "success" in page.text.lower():
                break
            page = _submit(client, page, fields)
        return page.text


def approve_device(verification_uri: str, user_code: str) -> str:
    """Open the verification page, enter ``user_code``, sign in and consent; the final page's text."""
    return sign_in(verification_uri, {"user_code": user_code})
