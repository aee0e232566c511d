"""Two test-peer-only tweaks to the OpenStack services, applied when the patched module loads.

Loaded by sitecustomize.py (the nova-* daemons get this directory on PYTHONPATH from peer.sh)
and by uwsgi's `import = kelp_patches` (nova-api, placement, keystone). Nothing is imported
here up front: eventlet must monkey-patch before sqlalchemy or oslo.messaging load.

1. SQLite *writer* transactions start with BEGIN IMMEDIATE (on oslo_db.sqlalchemy.enginefacade
   load). oslo.db opens every transaction with a plain, deferred BEGIN. A writer transaction
   that reads and then writes while another process writes the same file fails at once with
   "database is locked": SQLite (WAL mode here) does not wait (busy timeout) when a reader
   would have to become a writer, as that could deadlock. Taking the write lock at BEGIN makes
   writer transactions wait their turn instead (up to the ?timeout=30 of the URLs). Reader
   transactions (enginefacade.reader) keep the deferred BEGIN: in WAL mode they never block
   anyone, even one that a service forgets to close (making them IMMEDIATE too wedged Keystone:
   a leaked read transaction then held the write lock for good).

2. RPC replies are polled every few ms instead of every 0.5 s (on
   oslo_messaging._drivers.amqpdriver load). oslo.messaging 16.1 waits for a call's reply with
   `queue.get(block=False)` + `time.sleep(0.5)` (lp-2035113), so each nova-compute ->
   nova-conductor call costs >= 0.5 s and a 20-server batch takes minutes on one host.
"""
import importlib.abc
import os
import sys
import time


def _patch_oslo_db(enginefacade):
    import contextlib
    import contextvars

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    in_writer = contextvars.ContextVar("kelp_oslo_db_writer", default=False)  # per greenlet too
    produce_block = enginefacade._TransactionContext._produce_block

    @contextlib.contextmanager
    def _produce_block(self, mode, connection, savepoint, allow_async=False, context=None):
        cm = produce_block(self, mode, connection, savepoint, allow_async=allow_async, context=context)
        token = in_writer.set(self.mode is enginefacade._WRITER)
        try:
            with cm as block:
                yield block
        finally:
            in_writer.reset(token)

    enginefacade._TransactionContext._produce_block = _produce_block

    @event.listens_for(Engine, "begin")
    def _begin_immediate(conn):
        # Class-level listeners run before oslo.db's per-engine "begin" listener, which skips
        # its own BEGIN when in_transaction is set (and clears it on commit/rollback).
        if conn.dialect.name == "sqlite" and in_writer.get() and "in_transaction" not in conn.info:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True


def _patch_amqpdriver(mod):
    import queue

    import oslo_messaging
    from oslo_utils import timeutils

    def get(self, msg_id, timeout):
        watch = timeutils.StopWatch(duration=timeout)
        watch.start()
        pause = 0.001
        while not watch.expired():
            try:
                return self._queues[msg_id].get(block=False)
            except queue.Empty:
                time.sleep(pause)  # green under eventlet
                pause = min(pause * 2, 0.02)
        raise oslo_messaging.MessagingTimeout(
            "Timed out waiting for a reply to message ID %s" % msg_id)

    mod.ReplyWaiters.get = get


_HOOKS = {"oslo_db.sqlalchemy.enginefacade": _patch_oslo_db,
          "oslo_messaging._drivers.amqpdriver": _patch_amqpdriver}


class _PostImportHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        fn = _HOOKS.get(name)
        if fn is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        _HOOKS.pop(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            fn(module)
            print(f"kelp_patches: patched {name} in pid {os.getpid()}", file=sys.stderr, flush=True)

        spec.loader.exec_module = exec_and_patch
        return spec


if not any(isinstance(f, _PostImportHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _PostImportHook())
