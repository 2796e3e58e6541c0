"""An independent mDNS peer for tests/mdns.rs: python-zeroconf (Debian
package python3-zeroconf), run inside a test's network namespace.

  zeroconf_peer.py browse IFACE_ADDR           print the first _diemcau-ops._tcp
                                               instance as JSON, exit 1 after 5 s
  zeroconf_peer.py register IFACE_ADDR NAME PORT
                                               advertise NAME on IFACE_ADDR until
                                               stdin closes; prints "registered"
"""

import json
import socket
import sys
import threading

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, Zeroconf

TYPE = "_diemcau-ops._tcp.local."


def browse(addr):
    zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    found = threading.Event()
    out = {}

    class Listener:
        def add_service(self, zc, type_, name):
            # Resolves SRV, TXT and A with multicast queries from port 5353.
            info = zc.get_service_info(type_, name, timeout=3000)
            if info and not found.is_set():
                out.update(
                    name=name,
                    server=info.server,
                    port=info.port,
                    addresses=[socket.inet_ntoa(a) for a in info.addresses],
                    properties={
                        k.decode(): (v.decode() if v is not None else None)
                        for k, v in info.properties.items()
                    },
                )
                found.set()

        def update_service(self, zc, type_, name):
            pass

        def remove_service(self, zc, type_, name):
            pass

    ServiceBrowser(zc, TYPE, Listener())
    ok = found.wait(5)
    zc.close()
    if not ok:
        print("nothing found", file=sys.stderr)
        return 1
    print(json.dumps(out), flush=True)
    return 0


def register(addr, name, port):
    zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        TYPE,
        f"{name}.{TYPE}",
        addresses=[socket.inet_aton(addr)],
        port=int(port),
        properties={"txtvers": "1", "api": "/api/v1", "apiver": "1", "tls": "0"},
        server="zc-ops.local.",
    )
    zc.register_service(info)
    print("registered", flush=True)
    sys.stdin.read()
    zc.unregister_service(info)
    zc.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "browse":
        sys.exit(browse(sys.argv[2]))
    sys.exit(register(*sys.argv[2:5]))
