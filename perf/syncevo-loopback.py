# Runs Debian's syncevo-http-server with Debian's python (its script starts with an
# unsubstituted `#!@PYTHON@`), after forcing Twisted's listeners onto 127.0.0.1
# (listenTCP binds 0.0.0.0 when no interface is given). Used by perf/compare.sh
# and by the tests (tests/support/server.rs).
import runpy, sys
from twisted.internet import posixbase
_listen = posixbase.PosixReactorBase.listenTCP
def _loopback(self, port, factory, backlog=50, interface=""):
    return _listen(self, port, factory, backlog, interface or "127.0.0.1")
posixbase.PosixReactorBase.listenTCP = _loopback
sys.argv = ["/usr/bin/syncevo-http-server"] + sys.argv[1:]
runpy.run_path("/usr/bin/syncevo-http-server", run_name="__main__")
