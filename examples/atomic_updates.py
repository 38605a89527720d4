"""Atomic updates, end to end: incr, nested ref() updates, pipelines, atomic batches, transactions and locks.

Run it with `python examples/atomic_updates.py`: it starts its own server on a free loopback port. Type-checked
with `mypy --strict` by `python3 dev.py test`, so it also shows how the API reads to a type checker.
"""

from __future__ import annotations

import cyberdb


def main() -> None:
    db = cyberdb.Server()
    db.start(host="127.0.0.1", port=0, password="example")
    assert db.port is not None
    client = cyberdb.connect("127.0.0.1", db.port, password="example")
    with client.get_proxy() as proxy:
        stats = proxy.create_cyberdict("stats", {"pages": {}})
        sessions = proxy.create_cyberdict("sessions", {"s1": {"user": "ann", "cart": []}})
        bank = proxy.create_cyberdict("bank", {"alice": 100, "bob": 0})

        print("hits:", stats.incr("hits"), stats.incr("hits", 2))  # 1 3
        stats.ref("pages", "/home").incr()  # a nested counter, created at 0
        sessions.ref("s1", "cart").append({"sku": 42})  # a nested list, updated in place
        sessions.ref("s1")["user"] = "ann b."
        print("session:", sessions["s1"])

        with proxy.pipeline() as pipe:  # one round trip for all of it
            t = pipe.get_cyberdict("stats")
            hits = t["hits"]
            missing = t["nope"]
        print("pipelined:", hits.result(), pipe.results)
        try:
            missing.result()
        except KeyError as exc:
            print("its own error:", repr(exc))

        try:
            with proxy.pipeline(atomic=True) as pipe:  # all or nothing
                b = pipe.get_cyberdict("bank")
                b.incr("alice", -10)
                b["carol"]  # KeyError: the whole batch is rolled back
        except cyberdb.BatchAbortedError as exc:
            print("rolled back:", exc)
        print("bank unchanged:", bank.todict())

        def transfer(tx: cyberdb.Transaction) -> bool:
            accounts = tx.get_cyberdict("bank")
            if accounts["alice"] < 30:
                return False
            accounts["alice"] -= 30
            accounts["bob"] += 30
            return True

        print("transferred:", proxy.transact(transfer), bank.todict())

        with proxy.lock("report", ttl=10, timeout=5) as lock:
            print("lock held with fencing token", lock.token)
    client.close()
    db.stop()


if __name__ == "__main__":
    main()
