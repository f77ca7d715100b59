"""pytest fixtures: a fresh server per scenario, stopped with SIGTERM after it
(exit code must be 0, no panic logged); a failing report carries the server
log and keeps the server's temp dir. INTEROP_KEEP=1 keeps every temp dir."""

from __future__ import annotations

import os

import pytest

from harness import Server


@pytest.fixture
def server(request):
    # Scenarios pass Server arguments with indirect parametrisation, e.g.
    # @pytest.mark.parametrize("server", [{"components": {...}}], indirect=True)
    # or [{"c2s_options": "..."}] for extra [c2s] lines.
    srv = Server(**getattr(request, "param", {}))
    request.node._starling = srv
    try:
        srv.start()
        srv.add_user("alice", "alice-secret")
        srv.add_user("bob", "bob-secret")
        yield srv
        rc = srv.stop()
        assert rc == 0, f"starling exited with {rc} after SIGTERM"
        assert "panicked" not in srv.log(), "starling logged a panic"
    finally:
        srv.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    srv = getattr(item, "_starling", None)
    if srv is None:
        return
    if rep.failed:
        item._starling_failed = True
        rep.sections.append(("starling server log", srv.log() or "(empty)"))
        rep.sections.append(("starling temp dir (kept)", str(srv.dir)))
    if rep.when == "teardown" and not getattr(item, "_starling_failed", False) \
            and not os.environ.get("INTEROP_KEEP"):
        srv.cleanup()
