"""Network guard for align-track's tests.

Put this folder first on PYTHONPATH and set ALIGN_TRACK_NETGUARD to a file path:
every DNS lookup or connection to an address outside 127.0.0.0/8 (or ::1) is then
refused with OSError and written to that file, in this process and in every Python
subprocess that inherits the environment. The tests fail when the file is not empty.
"""
import ipaddress
import os
import socket
import traceback

_LOG = os.environ.get("ALIGN_TRACK_NETGUARD")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_local(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).strip("[]")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what, target):
    message = f"netguard: refused {what} to {target!r} (pid {os.getpid()})"
    try:
        with open(_LOG, "a") as fh:
            fh.write(message + "\n" + "".join(traceback.format_stack(limit=12)) + "\n")
    except OSError:
        pass
    raise OSError(message)


def _install():
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_gethostbyname = socket.gethostbyname

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _refuse("DNS lookup", host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        if not _is_local(host):
            _refuse("DNS lookup", host)
        return real_gethostbyname(host)

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not _is_local(host):
                _refuse("connection", address)

    def connect(self, address):
        _check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex


if _LOG:
    _install()
