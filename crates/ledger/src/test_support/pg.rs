//! A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, from the machine's
//! Debian binaries. PostgreSQL refuses to run as root, so as root the cluster belongs
//! to the `postgres` user.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

pub(crate) struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub(crate) port: u16,
}

fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|err| panic!("{cmd:?}: {err}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (with a note) when PostgreSQL is not
    /// installed. Under `CI=true` a missing PostgreSQL fails the test instead.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL binaries not found under /usr/lib/postgresql (scripts/setup.sh installs them)");
            }
            eprintln!("skipping: PostgreSQL binaries not found under /usr/lib/postgresql");
            return None;
        };
        let as_postgres = output(Command::new("id").arg("-u")) == "0";
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let uid = output(Command::new("id").args(["-u", "postgres"]))
                .parse()
                .unwrap();
            let gid = output(Command::new("id").args(["-g", "postgres"]))
                .parse()
                .unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            dir,
            bin,
            as_postgres,
            port,
        };
        let data = cluster.data();
        output(&mut cluster.command(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "tollgate",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        ));
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            cluster.port,
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("server.log");
        output(&mut cluster.command(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ));
        Some(cluster)
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=tollgate dbname=postgres",
            self.port
        )
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            Command::new(&program)
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
