"""`NO_PROXY` as the sidecar and the operator's probes read it: names, domain suffixes, addresses,
CIDR ranges and ports, and which proxy `EgressProxies` picks for a provider."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from router_sidecar.egress_proxy import EgressProxies, egress_settings
from router_sidecar.no_proxy import NoProxy


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        (".svc", "models.team.svc", 443, True),
        ("svc", "models.team.svc", 443, True),
        ("*.svc", "models.team.svc", 443, True),
        (".svc", "svc", 443, True),
        (".svc", "svc.example.com", 443, False),
        ("team.svc", "otherteam.svc", 443, False),
        ("Example.COM", "API.example.com", 443, True),
        ("example.com", "api.example.com.", 443, True),
        ("localhost,127.0.0.1", "localhost", 443, True),
        ("localhost,127.0.0.1", "127.0.0.1", 443, True),
        ("localhost,127.0.0.1", "api.openai.com", 443, False),
        ("*", "api.openai.com", 443, True),
        ("10.0.0.0/8", "10.96.4.7", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("10.0.0.0/8", "10.example.com", 443, False),
        (" 192.168.0.0/16 , 10.0.0.0/8 ", "192.168.200.1", 443, True),
        ("10.1.2.3", "10.1.2.3", 443, True),
        ("10.1.2.3", "10.1.2.4", 443, False),
        ("fd00::/8", "fd12::1", 443, True),
        ("fd00::/8", "[fd12::1]", 443, True),
        ("fd00::/8", "fe80::1", 443, False),
        ("::/0", "10.1.2.3", 443, False),
        ("0.0.0.0/0", "::1", 443, False),
        ("[fd00::1]", "fd00::1", 443, True),
        ("[fd00::1]:8443", "fd00::1", 8443, True),
        ("[fd00::1]:8443", "fd00::1", 443, False),
        ("models.internal:8080", "models.internal", 8080, True),
        ("models.internal:8080", "models.internal", 443, False),
        ("10.0.0.0/8:8080", "10.1.1.1", 8080, True),
        ("10.0.0.0/8:8080", "10.1.1.1", 80, False),
        ("", "api.openai.com", 443, False),
    ],
)
def test_an_entry_matches_names_suffixes_addresses_ranges_and_ports(
    no_proxy: str, host: str, port: int, direct: bool
) -> None:
    assert NoProxy.parse(no_proxy).bypasses(host, port) is direct


def test_entries_that_cannot_be_read_are_left_out_with_a_warning_naming_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        rules = NoProxy.parse("models.internal:http,10.0.0.0/33,.svc")

    assert rules.bypasses("a.svc", 443)
    assert not rules.bypasses("models.internal", 80)
    assert not rules.bypasses("10.0.0.1", 443)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'models.internal:http'" in warned and "'10.0.0.0/33'" in warned


def test_egress_proxies_pick_the_proxy_of_the_scheme_unless_no_proxy_says_direct() -> None:
    proxies = EgressProxies(
        {"https": "http://team:pw@proxy.internal:3128", "no": "10.0.0.0/8,.svc"}
    )

    tunnel = proxies.for_host("https", "api.openai.com")
    assert tunnel is not None and tunnel.url == "http://proxy.internal:3128"
    assert tunnel.authorization.startswith("Basic ") and "pw" not in repr(tunnel)
    assert proxies.for_host("https", "10.96.0.12", 8443) is None
    assert proxies.for_host("https", "models.team.svc") is None
    assert proxies.for_host("http", "api.openai.com") is None  # no HTTP_PROXY set
    assert not EgressProxies({"no": "*"})


def test_a_default_port_is_the_schemes_own() -> None:
    proxies = EgressProxies({"https": "http://proxy:3128", "no": "models.internal:443"})

    assert proxies.for_host("https", "models.internal") is None
    assert proxies.for_host("https", "models.internal", 8443) is not None


def test_the_environment_is_read_in_either_case(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("no_proxy", "172.16.0.0/12")

    proxies = EgressProxies()

    assert proxies.for_host("https", "172.20.1.1") is None
    assert proxies.for_host("https", "api.anthropic.com") is not None


def test_laneways_own_variables_win_over_the_usual_ones_as_a_whole() -> None:
    both = {
        "LANEWAY_EGRESS_HTTPS_PROXY": "http://laneway-proxy:3128",
        "HTTPS_PROXY": "http://other-proxy:3128",
        "NO_PROXY": ".svc",
    }
    usual = {
        "https_proxy": "http://lower:3128",
        "HTTPS_PROXY": "http://upper:3128",
        "NO_PROXY": ".svc",
    }

    assert egress_settings(both) == {"https": "http://laneway-proxy:3128"}
    assert egress_settings(usual) == {"https": "http://lower:3128", "no": ".svc"}
    assert egress_settings({}) == {}


def test_credentials_from_a_mounted_secret_apply_to_proxies_without_their_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "username").write_text("team\n")
    (tmp_path / "password").write_text("s3cret\n")
    settings = {"https": "http://proxy:3128", "http": "http://other:pw@proxy:3128"}

    proxies = EgressProxies(settings, credentials_dir=str(tmp_path))

    tunnel = proxies.for_host("https", "api.openai.com")
    assert tunnel is not None
    assert tunnel.authorization == "Basic " + base64.b64encode(b"team:s3cret").decode()
    forward = proxies.for_host("http", "models.example")
    assert forward is not None
    assert forward.authorization == "Basic " + base64.b64encode(b"other:pw").decode()

    with caplog.at_level(logging.WARNING):
        bare = EgressProxies(settings, credentials_dir=str(tmp_path / "missing"))
    tunnel = bare.for_host("https", "api.openai.com")
    assert tunnel is not None and tunnel.authorization == ""
    assert str(tmp_path / "missing" / "username") in caplog.text


def test_the_credentials_directory_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "username").write_text("team")
    (tmp_path / "password").write_text("pw")
    monkeypatch.setenv("LANEWAY_EGRESS_HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("LANEWAY_EGRESS_PROXY_CREDENTIALS", str(tmp_path))

    tunnel = EgressProxies().for_host("https", "api.anthropic.com")

    assert tunnel is not None
    assert tunnel.connect_request("api.anthropic.com", 443).endswith(
        b"Proxy-Authorization: Basic " + base64.b64encode(b"team:pw") + b"\r\n\r\n"
    )


def _basic(pair: bytes) -> str:
    return "Basic " + base64.b64encode(pair).decode()


def _mount_secret(mount: Path, version: str, username: str, password: str) -> None:
    """Write the Secret the way the kubelet updates a Secret volume: the files are links through
    `..data`, which is swapped in one rename to a directory holding the new version."""
    data = mount / f"..{version}"
    data.mkdir()
    (data / "username").write_text(username)
    (data / "password").write_text(password)
    (mount / "..data_tmp").symlink_to(data.name)
    (mount / "..data_tmp").rename(mount / "..data")
    for name in ("username", "password"):
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")


def test_rotated_credentials_are_used_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _mount_secret(tmp_path, "v1", "team", "first")
    settings = {"https": "http://proxy:3128", "http": "http://own:pw@proxy:3128"}
    proxies = EgressProxies(settings, credentials_dir=str(tmp_path), recheck_s=0)
    tunnel = proxies.for_host("https", "api.openai.com")
    assert tunnel is not None and tunnel.authorization == _basic(b"team:first")

    with caplog.at_level(logging.INFO):
        _mount_secret(tmp_path, "v2", "team", "second")
        again = proxies.current(tunnel)
    assert again.authorization == _basic(b"team:second")
    assert proxies.for_host("https", "api.openai.com") == again
    assert "credentials" in caplog.text and "second" not in caplog.text
    forward = proxies.for_host("http", "models.example")
    assert forward is not None and proxies.current(forward).authorization == _basic(b"own:pw")


def test_credentials_are_looked_at_again_only_after_the_recheck_interval(tmp_path: Path) -> None:
    _mount_secret(tmp_path, "v1", "team", "first")
    proxies = EgressProxies(
        {"https": "http://proxy:3128"}, credentials_dir=str(tmp_path), recheck_s=3600
    )
    tunnel = proxies.for_host("https", "api.openai.com")
    _mount_secret(tmp_path, "v2", "team", "second")
    assert tunnel is not None
    assert proxies.current(tunnel).authorization == _basic(b"team:first")


def test_credentials_that_appear_later_are_picked_up_and_missing_ones_warn_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        proxies = EgressProxies(
            {"https": "http://proxy:3128"}, credentials_dir=str(tmp_path), recheck_s=0
        )
        tunnel = proxies.for_host("https", "api.openai.com")
        assert tunnel is not None and tunnel.authorization == ""
        proxies.current(tunnel)
    assert caplog.text.count("Cannot read the egress proxy's username") == 1
    _mount_secret(tmp_path, "v1", "late", "pw")
    assert proxies.current(tunnel).authorization == _basic(b"late:pw")
