# ruff: noqa: E501  (the texts are sentences; wrapping them hurts more than it helps)
"""What a citizen's phone shows, in Japanese (the default) and English.

Every text of the phone page lives here, once: the server renders the friendly
pages (a wrong, expired or used link, a full hand of requests) itself, and hands
the call page's texts to its script as a JSON block (not executed, so the
``Content-Security-Policy: default-src 'self'`` needs no exception). Nothing on the
page comes from anywhere but the node: no CDN, no web font, no inline script or
style.
"""

from __future__ import annotations

import html
import json
from typing import Literal

__all__ = ["CSP", "TEXTS", "Lang", "call_page", "choose_lang", "message_page"]

Lang = Literal["ja", "en"]

#: The only policy the web port sends: everything from the node itself.
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "オンライン相談",
        "lang_toggle": "English",
        "intro": "市役所の職員とビデオで相談します。アプリは要りません。",
        "start": "相談をはじめる",
        "asking": "カメラとマイクの使用を「許可」してください。",
        "waiting": "職員が入室を許可するまでお待ちください。",
        "code_label": "受付番号",
        "code_hint": "職員にこの番号をお伝えください。",
        "connecting": "接続しています…",
        "in_call": "相談中",
        "mute": "マイクを切る",
        "unmute": "マイクを入れる",
        "camera_off": "カメラを切る",
        "camera_on": "カメラを入れる",
        "flip": "カメラの向きを変える",
        "hangup": "相談を終える",
        "denied": "カメラやマイクが使えません。ブラウザーの設定で、このページにカメラとマイクの使用を許可してから、もう一度「相談をはじめる」を押してください。",
        "no_camera": "カメラが見つかりません。声だけで相談します。",
        "no_media": "マイクもカメラも見つかりません。職員にお知らせください。",
        "audio_only": "電波が弱いため、声だけに切り替えました。",
        "lost": "接続が切れました。自動でつなぎ直しています…",
        "lost_desk": "受付の端末との接続が切れました。相談は別の職員の端末で続いています。「つなぎ直す」を押してください。",
        "reconnect": "つなぎ直す",
        "ended": "相談は終わりました。ありがとうございました。この画面は閉じてかまいません。",
        "declined": "今回は入室できませんでした。職員にお声がけください。",
        "expired": "このリンクの有効期限が切れました。職員に新しいQRコードをもらってください。",
        "insecure": "このページは安全な接続（https://）でしか使えません。職員が示したQRコードを読み取り直してください。",
        "noscript": "このページを使うにはJavaScriptを有効にしてください。",
        "bad_link": "このリンクは使えません。職員が示したQRコードを読み取り直してください。",
        "used": "このリンクは別の端末ですでに開かれています。職員に新しいQRコードをもらってください。",
        "slow_down": "アクセスが多すぎます。しばらく待ってからもう一度お試しください。",
        "landing": "職員が示したQRコードを読み取ってください。",
        "error": "問題が起きました。職員にお知らせください。",
        "you": "あなた",
        "staff": "職員",
    },
    "en": {
        "title": "Online consultation",
        "lang_toggle": "日本語",
        "intro": "A video consultation with city staff. No app needed.",
        "start": "Start consultation",
        "asking": "Please allow the camera and microphone.",
        "waiting": "Please wait until staff let you in.",
        "code_label": "Your number",
        "code_hint": "Tell the staff this number.",
        "connecting": "Connecting…",
        "in_call": "In consultation",
        "mute": "Mute microphone",
        "unmute": "Unmute microphone",
        "camera_off": "Turn camera off",
        "camera_on": "Turn camera on",
        "flip": "Switch camera",
        "hangup": "End consultation",
        "denied": "The camera or microphone is blocked. Allow them for this page in your browser's settings, then press “Start consultation” again.",
        "no_camera": "No camera found. The consultation goes on by voice.",
        "no_media": "No microphone or camera found. Please tell the staff.",
        "audio_only": "The connection is weak: switched to voice only.",
        "lost": "The connection was lost. Reconnecting by itself…",
        "lost_desk": "The desk's laptop is gone. The consultation goes on with other staff: press “Reconnect”.",
        "reconnect": "Reconnect",
        "ended": "The consultation has ended. Thank you. You may close this page.",
        "declined": "You could not be let in this time. Please speak to the staff.",
        "expired": "This link has expired. Please ask the staff for a new QR code.",
        "insecure": "This page only works over a secure connection (https://). Please scan the staff's QR code again.",
        "noscript": "Please turn on JavaScript to use this page.",
        "bad_link": "This link does not work. Please scan the staff's QR code again.",
        "used": "This link was already opened on another phone. Please ask the staff for a new QR code.",
        "slow_down": "Too many requests. Please wait a moment and try again.",
        "landing": "Please scan the QR code the staff show you.",
        "error": "Something went wrong. Please tell the staff.",
        "you": "You",
        "staff": "Staff",
    },
}


def choose_lang(accept_language: str | None) -> Lang:
    """Japanese unless the browser prefers English over Japanese (``Accept-Language``)."""
    best: tuple[float, Lang] | None = None
    for part in (accept_language or "")[:512].split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-", 1)[0]
        if primary in ("ja", "en") and (best is None or q > best[0]):
            best = (q, "ja" if primary == "ja" else "en")
    return best[1] if best is not None else "ja"


def _head(lang: Lang, title: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="stylesheet" href="/static/app.css">\n</head>\n'
    )


def message_page(lang: Lang, key: str) -> str:
    """A page with one message (a wrong or used link, an ended call, …)."""
    t = TEXTS[lang]
    return (
        _head(lang, t["title"])
        + '<body>\n<main class="screen message">\n'
        + f"<h1>{html.escape(t['title'])}</h1>\n"
        + f'<p class="big" id="message" data-key="{key}">{html.escape(t[key])}</p>\n'
        + "</main>\n</body>\n</html>\n"
    )


def call_page(lang: Lang) -> str:
    """The page of an open invitation: every screen, shown one at a time by app.js."""
    t = {k: html.escape(v) for k, v in TEXTS[lang].items()}
    strings = json.dumps(TEXTS, ensure_ascii=False).replace("<", "\\u003c")
    return (
        _head(lang, TEXTS[lang]["title"])
        + f'<body data-lang="{lang}">\n'
        + f'<script type="application/json" id="texts">{strings}</script>\n'
        + '<header class="bar"><span data-t="title">'
        + t["title"]
        + '</span><button type="button" id="lang" class="small" data-t="lang_toggle">'
        + t["lang_toggle"]
        + "</button></header>\n"
        + f'<noscript><p class="big notice">{t["noscript"]}</p></noscript>\n'
        + '<main>\n<section class="screen" id="start" hidden>\n'
        + f'<p class="big" data-t="intro">{t["intro"]}</p>\n'
        + f'<button type="button" id="go" class="primary" data-t="start">{t["start"]}</button>\n'
        + f'<p class="hint" id="asking" data-t="asking" hidden>{t["asking"]}</p>\n'
        + "</section>\n"
        + '<section class="screen" id="lobby" hidden>\n'
        + f'<p class="big" data-t="waiting">{t["waiting"]}</p>\n'
        + f'<p class="label" data-t="code_label">{t["code_label"]}</p>\n'
        + '<p class="code" id="code" aria-live="polite"></p>\n'
        + f'<p class="hint" data-t="code_hint">{t["code_hint"]}</p>\n'
        + '<video id="self-preview" class="self" playsinline autoplay muted></video>\n'
        + "</section>\n"
        + '<section class="screen" id="call" hidden>\n'
        + '<div class="videos">\n'
        + '<video id="remote" playsinline autoplay></video>\n'
        + '<video id="forwarded" playsinline autoplay hidden></video>\n'
        + '<video id="self" class="self" playsinline autoplay muted></video>\n'
        + "</div>\n"
        + '<div id="audios" hidden></div>\n'
        + '<p class="status" id="status" aria-live="polite"></p>\n'
        + '<div class="controls">\n'
        + f'<button type="button" id="mute" data-t="mute">{t["mute"]}</button>\n'
        + f'<button type="button" id="camera" data-t="camera_off">{t["camera_off"]}</button>\n'
        + f'<button type="button" id="flip" data-t="flip">{t["flip"]}</button>\n'
        + f'<button type="button" id="hangup" class="danger" data-t="hangup">{t["hangup"]}</button>\n'
        + "</div>\n</section>\n"
        + '<section class="screen message" id="notice" hidden>\n'
        + '<p class="big" id="notice-text" aria-live="assertive"></p>\n'
        + '<button type="button" id="retry" class="primary" data-t="start" hidden>'
        + t["start"]
        + "</button>\n"
        + '<button type="button" id="reconnect" class="primary" data-t="reconnect" hidden>'
        + t["reconnect"]
        + "</button>\n</section>\n"
        + "</main>\n"
        + '<script src="/static/app.js"></script>\n'
        + "</body>\n</html>\n"
    )
