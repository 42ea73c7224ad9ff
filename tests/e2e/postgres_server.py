"""A PostgreSQL server of the test's own: Debian's postgresql binaries, initdb into a temporary directory, a
free loopback port. initdb refuses to run as root, so as root the server runs as the postgres user."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _bin(name):
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    if not found:
        raise RuntimeError("PostgreSQL's %s is not installed (Debian package postgresql)" % name)
    return found[-1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, database="lowbit"):
        self.dir = tempfile.mkdtemp(prefix="lowbit-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)
        self.uri = "postgres://postgres@127.0.0.1:%d/%s" % (self.port, database)

    def _run(self, *cmd):
        if self.as_postgres:
            cmd = ("runuser", "-u", "postgres", "--") + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)

    def _ctl(self, action):
        # fsync off: the test's database is thrown away; it only has to behave like a server.
        self._run(_bin("pg_ctl"), action, "-D", self.data, "-w", "-m", "fast", "-l", os.path.join(self.dir, "log"),
                  "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.dir))

    def start(self):
        self._ctl("start")

    def stop(self):
        self._ctl("stop")

    def restart(self):
        self._ctl("restart")

    def query(self, sql):
        """Rows of `sql` through psql, as lists of strings."""
        cmd = [_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", self.uri.rsplit("/", 1)[1],
               "-At", "-F", "\t", "-c", sql]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def close(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
