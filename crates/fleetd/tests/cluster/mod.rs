//! A cluster of real fleetds on hosts in network namespaces (`fleet_testkit::Network`), with a
//! real etcd of one or three members on hosts of their own, and the invariant checker that
//! reads both the registry (through the API) and the hosts (the unit processes that run).
//!
//! Every unit a test submits runs `unit:<name>:<machine>` as its process title (`unit()`), so
//! what really runs where is read from /proc, not from what fleet says. Needs root.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleet_engine::invariants::{violations, Observed, Strictness};
use fleet_testkit::{EtcdCluster, Network};
use fleet_unit::{Machine, MachineId, Requirements};
use fleet_wire::client::{Client, Endpoint};

/// fleet's functional tests ran with agent_ttl 2-3 s.
pub const AGENT_TTL: Duration = Duration::from_secs(2);

/// Every fleetd also serves the API on this port of its host's address (fleet's functional
/// tests used 54728), over TLS with a bearer token.
pub const API_PORT: u16 = 54728;
pub const API_TOKEN: &str = "cluster-test-token-0123456789";

pub struct Cluster {
    // Dropped in this order: fleetds (and every process on their hosts), etcd, the network.
    hosts: Vec<Host>,
    pub etcd: EtcdCluster,
    pub network: Network,
    pub tls: fleet_testkit::TlsFiles,
    dir: tempfile::TempDir,
}

pub struct Host {
    pub index: usize,
    pub machine: String,
    pub metadata: String,
    home: PathBuf,
    child: Option<Child>,
    /// A host whose fleetd runs as `fleet.service` of a sandboxed systemd (its unit manager).
    systemd: Option<fleet_testkit::SystemdSandbox>,
}

impl Host {
    fn socket(&self) -> PathBuf {
        match &self.systemd {
            Some(sandbox) => sandbox.shared_dir().join("fleet.sock"),
            None => self.home.join("fleet.sock"),
        }
    }

    fn runs_fleetd(&self) -> bool {
        self.child.is_some() || self.systemd.is_some()
    }

    /// fleetd's log: its file, or the sandbox's journal.
    fn log(&self) -> String {
        match &self.systemd {
            Some(sandbox) => sandbox
                .run(
                    "journalctl",
                    &["--no-pager", "-o", "cat", "-u", "fleet.service"],
                )
                .unwrap_or_else(|e| e),
            None => std::fs::read_to_string(self.home.join("fleetd.log")).unwrap_or_default(),
        }
    }
}

/// A unit file whose process shows its name and machine (`unit:%n:%m`), with `x_fleet` lines
/// under `[X-Fleet]`.
pub fn unit(x_fleet: &str) -> String {
    let mut text =
        String::from("[Service]\nExecStart=/bin/bash -c 'exec -a unit:%n:%m sleep infinity'\n");
    if !x_fleet.is_empty() {
        text.push_str("\n[X-Fleet]\n");
        text.push_str(x_fleet);
        text.push('\n');
    }
    text
}

impl Cluster {
    /// `hosts` fleetds (machine metadata `host=h<i>` plus `extra_metadata(i)`) and an etcd of
    /// `etcd_members` members, each on a host of its own.
    pub fn start(
        hosts: usize,
        etcd_members: usize,
        extra_metadata: impl Fn(usize) -> String,
    ) -> Cluster {
        let mut cluster = Cluster::create(hosts, etcd_members, extra_metadata);
        for i in 0..hosts {
            cluster.start_fleetd(i);
        }
        cluster.wait_for_machines(hosts);
        cluster
    }

    /// [`Cluster::start`] without starting any fleetd.
    pub fn create(
        hosts: usize,
        etcd_members: usize,
        extra_metadata: impl Fn(usize) -> String,
    ) -> Cluster {
        let network = Network::create(hosts + etcd_members).expect("network namespaces");
        let etcd_hosts: Vec<usize> = (hosts..hosts + etcd_members).collect();
        let etcd = EtcdCluster::start_on(&network, &etcd_hosts);
        let dir = tempfile::tempdir().unwrap();
        let tag = network.namespace(0).replace('-', "");
        let addresses: Vec<String> = (0..hosts).map(|i| network.address(i)).collect();
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let tls = fleet_testkit::TlsFiles::generate_for(dir.path(), &addresses).unwrap();
        std::fs::write(dir.path().join("api-token"), API_TOKEN).unwrap();
        // fleetd is fleetctl too, when called by that name.
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_fleetd"),
            dir.path().join("bin/fleetctl"),
        )
        .unwrap();
        let mut cluster = Cluster {
            hosts: Vec::new(),
            etcd,
            network,
            tls,
            dir,
        };
        for i in 0..hosts {
            let extra = extra_metadata(i);
            let metadata = match extra.is_empty() {
                true => format!("host=h{i}"),
                false => format!("host=h{i},{extra}"),
            };
            let home = cluster.dir.path().join(format!("h{i}"));
            std::fs::create_dir_all(&home).unwrap();
            cluster.hosts.push(Host {
                index: i,
                machine: fleet_testkit::machine_id(&format!("{tag}m{i}")),
                metadata,
                home,
                child: None,
                systemd: None,
            });
        }
        cluster
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn machines(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.machine.clone()).collect()
    }

    /// Starts (or starts again) fleetd on host `i`.
    pub fn start_fleetd(&mut self, i: usize) {
        let command = self.fleetd_command(i);
        self.spawn_fleetd(i, command);
    }

    /// The command that runs fleetd on host `i` (inside its namespace, configured through
    /// `FLEET_*` variables, logging to `fleetd.log` in its home), for a test to alter.
    pub fn fleetd_command(&self, i: usize) -> Command {
        let endpoints: Vec<String> = self.etcd.endpoints();
        let address = self.network.address(i);
        let host = &self.hosts[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.home.join("fleetd.log"))
            .unwrap();
        let mut command = self.network.command(i, env!("CARGO_BIN_EXE_fleetd"));
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("FLEET_DATA_DIR", host.home.join("data"))
            .env("FLEET_RUNTIME_DIR", host.home.join("run"))
            .env("FLEET_UNITS_DIRECTORY", host.home.join("units"))
            .env("FLEET_MACHINE_ID", &host.machine)
            .env("FLEET_UNIT_MANAGER", "native")
            .env("FLEET_PUBLIC_IP", &address)
            .env("FLEET_METADATA", &host.metadata)
            .env("FLEET_ETCD_SERVERS", endpoints.join(","))
            .env("FLEET_AGENT_TTL", format!("{}s", AGENT_TTL.as_secs()))
            .env(
                "FLEET_API_LISTEN",
                format!(
                    "unix://{},https://{address}:{API_PORT}",
                    host.home.join("fleet.sock").display()
                ),
            )
            .env("FLEET_API_TLS_CERT_FILE", &self.tls.server_cert)
            .env("FLEET_API_TLS_KEY_FILE", &self.tls.server_key)
            .env("FLEET_API_TOKEN_FILE", self.dir.path().join("api-token"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// Boots a sandboxed systemd on host `i` and starts fleetd there as production does: from
    /// `contrib/systemd/fleet.service` and `fleet.socket`, with the unit manager on `auto`
    /// (so systemd) and the machine ID from the sandbox's /etc/machine-id (fleet's default),
    /// configured by a drop-in. Its machine ID replaces the host's.
    pub fn start_on_systemd(&mut self, i: usize) {
        let namespace = self.network.namespace(i);
        let sandbox = fleet_testkit::SystemdSandbox::boot_in(
            env!("CARGO_TARGET_TMPDIR").as_ref(),
            Some(&namespace),
        )
        .expect("a sandboxed systemd");
        let machine = sandbox
            .run("cat", &["/etc/machine-id"])
            .expect("the sandbox's machine ID")
            .trim()
            .to_owned();
        let settings = format!(
            "# Back well within the test's short agent TTL (fleet.service says 2 s).\n\
             RestartSec=300ms\n\
             Environment=FLEET_ETCD_SERVERS={}\n\
             Environment=FLEET_PUBLIC_IP={}\n\
             Environment=FLEET_METADATA={}\n\
             Environment=FLEET_AGENT_TTL={}s\n",
            self.etcd.endpoints().join(","),
            self.network.address(i),
            self.hosts[i].metadata,
            AGENT_TTL.as_secs()
        );
        sandbox
            .install_fleetd(env!("CARGO_BIN_EXE_fleetd").as_ref(), &settings)
            .unwrap_or_else(|e| panic!("fleet.service: {e}\n{}", sandbox.console()));
        self.hosts[i].machine = machine;
        self.hosts[i].systemd = Some(sandbox);
    }

    /// Host `i`'s sandboxed systemd, if it has one.
    pub fn systemd(&self, i: usize) -> Option<&fleet_testkit::SystemdSandbox> {
        self.hosts[i].systemd.as_ref()
    }

    /// Runs `command` as host `i`'s fleetd.
    pub fn spawn_fleetd(&mut self, i: usize, mut command: Command) {
        self.hosts[i].child = Some(command.spawn().unwrap());
    }

    /// Host `i`'s directory (its fleetd's data, units, socket and log).
    pub fn home(&self, i: usize) -> &std::path::Path {
        &self.hosts[i].home
    }

    /// Waits (10 s) for host `i`'s fleetd to exit by itself: its exit code, or `None` if it
    /// still runs.
    pub fn fleetd_exit(&mut self, i: usize) -> Option<i32> {
        let child = self.hosts[i].child.as_mut()?;
        match fleet_testkit::exits_within(child, Duration::from_secs(10)) {
            true => {
                let code = child.wait().ok().and_then(|s| s.code());
                self.hosts[i].child = None;
                Some(code.unwrap_or(-1))
            }
            false => None,
        }
    }

    /// Sends `signal` (`-KILL`, `-QUIT`, `-TERM`) to host `i`'s fleetd and waits (10 s) for it
    /// to end: its exit code (`None`: killed by a signal, or ended by force after the wait, or
    /// a fleetd under systemd, which restarts it). Its units' processes stay (as they would on
    /// a real machine).
    pub fn signal_fleetd(&mut self, i: usize, signal: &str) -> Option<i32> {
        self.signal_fleetd_keep(i, signal);
        if self.hosts[i].systemd.is_some() {
            return None;
        }
        let mut child = self.hosts[i].child.take()?;
        if !fleet_testkit::exits_within(&mut child, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        child.wait().ok().and_then(|status| status.code())
    }

    /// Sends `signal` to host `i`'s fleetd and lets it run on (`-HUP`).
    pub fn signal_fleetd_keep(&self, i: usize, signal: &str) {
        let host = &self.hosts[i];
        if let Some(sandbox) = &host.systemd {
            let signal = format!("--signal={}", signal.trim_start_matches('-'));
            let _ = sandbox.systemctl(&["kill", &signal, "fleet.service"]);
        } else if let Some(child) = &host.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    pub fn fleetd_running(&self, i: usize) -> bool {
        self.hosts[i].runs_fleetd()
    }

    /// fleetctl against host `i`'s fleetd; (exit code, stdout, stderr).
    pub fn fleetctl(&self, i: usize, args: &[&str]) -> (i32, String, String) {
        let endpoint = format!("--endpoint=unix://{}", self.hosts[i].socket().display());
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(args);
        crate::common::fleetctl(&all, &[])
    }

    /// The fleetctl command, run inside host `from`'s namespace against host `to`'s API over
    /// the network (https, with the cluster's CA and `token`): (exit code, stdout, stderr).
    /// Bounded by 60 s.
    pub fn remote_fleetctl(
        &self,
        from: usize,
        to: usize,
        token: Option<&str>,
        args: &[&str],
    ) -> (i32, String, String) {
        let mut command = self.network.command(from, "/usr/bin/timeout");
        command
            .arg("60")
            .arg(self.dir.path().join("bin/fleetctl"))
            .arg(format!(
                "--endpoint=https://{}:{API_PORT}",
                self.network.address(to)
            ))
            .arg(format!("--ca-file={}", self.tls.ca.display()))
            .args(args)
            .env_remove("FLEETCTL_ENDPOINT")
            .env_remove("FLEETCTL_API_TOKEN");
        if let Some(token) = token {
            command.env("FLEETCTL_API_TOKEN", token);
        }
        let output = command.output().expect("run fleetctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `fleetctl`, which must succeed; its stdout.
    pub fn fleetctl_ok(&self, i: usize, args: &[&str]) -> String {
        let (code, out, err) = self.fleetctl(i, args);
        assert_eq!(code, 0, "fleetctl {args:?} on host {i}: {out}{err}");
        out
    }

    /// Writes `units` (name, text) to files and `fleetctl start --no-block`s them through host
    /// `via`.
    pub fn start_units(&self, via: usize, units: &[(String, String)]) {
        let dir = self.dir.path().join("files");
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["start".to_owned(), "--no-block".to_owned()];
        for (name, text) in units {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            args.push(path.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.fleetctl_ok(via, &args);
    }

    /// The API client of the first host whose fleetd runs.
    pub fn client(&self) -> Client {
        let host = self
            .hosts
            .iter()
            .position(Host::runs_fleetd)
            .expect("a running fleetd");
        self.client_of(host)
    }

    /// The API client of host `i`'s fleetd.
    pub fn client_of(&self, i: usize) -> Client {
        let url = format!("unix://{}", self.hosts[i].socket().display());
        Client::new(Endpoint::parse(&url).unwrap(), Duration::from_secs(5))
    }

    pub fn wait_for_machines(&self, count: usize) {
        self.eventually("every machine announced", Duration::from_secs(30), || {
            let machines = self.client().machines().map_err(|e| e.to_string())?;
            match machines.len() == count {
                true => Ok(()),
                false => Err(format!("{} machines", machines.len())),
            }
        });
    }

    /// What runs where, from the hosts' process tables: unit → machines it runs on (only this
    /// cluster's machines).
    pub fn running(&self) -> BTreeMap<String, Vec<String>> {
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (unit, machine) in self.unit_processes().into_keys() {
            running.entry(unit).or_default().push(machine);
        }
        running
    }

    /// Every unit process of this cluster: (unit, machine) → PID. A unit restarted has a new
    /// PID.
    pub fn unit_processes(&self) -> BTreeMap<(String, String), u32> {
        let machines: BTreeSet<String> = self.machines().into_iter().collect();
        let mut processes = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return processes;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let title = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let title = String::from_utf8_lossy(title);
            let Some((unit, machine)) = title
                .strip_prefix("unit:")
                .and_then(|rest| rest.rsplit_once(':'))
            else {
                continue;
            };
            if machines.contains(machine) {
                processes.insert((unit.to_owned(), machine.to_owned()), pid);
            }
        }
        processes
    }

    /// Polls `probe` every 100 ms until it succeeds; fails the test after `within` with the
    /// last thing it said and the fleetd logs' tails.
    pub fn eventually<T>(
        &self,
        what: &str,
        within: Duration,
        probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        crate::common::poll(what, within, Duration::from_millis(100), probe, || {
            self.logs()
        })
    }

    /// The last lines of every fleetd's log.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for host in &self.hosts {
            let log = host.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            all.push_str(&format!(
                "--- host {} ({})\n{}\n",
                host.index,
                host.machine,
                tail.join("\n")
            ));
        }
        all
    }

    /// The host whose fleetd leads the engine now (the last to log that it leads).
    pub fn leader(&self) -> Option<usize> {
        let mut latest: Option<(String, usize)> = None;
        for host in self.hosts.iter().filter(|h| h.runs_fleetd()) {
            let log = host.log();
            if let Some(line) = log.lines().rev().find(|l| l.contains("engine: leading")) {
                let at = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if latest.as_ref().is_none_or(|(t, _)| at > *t) {
                    latest = Some((at, host.index));
                }
            }
        }
        latest.map(|(_, i)| i)
    }

    /// The invariants, from the registry (units and their constraints, through the API) and
    /// from the hosts (what runs): no unit on two machines, no conflicting units together,
    /// every MachineOf peer with its unit, every launched global unit on every machine in the
    /// registry whose metadata it accepts, and the self-healing rules (moves as the failure
    /// history tells). Violations, described; empty when all hold.
    pub fn violations(&self) -> Result<Vec<String>, String> {
        self.violations_seen_by(&self.client())
    }

    /// [`Cluster::violations`], with the registry read through `client`.
    pub fn violations_seen_by(&self, client: &Client) -> Result<Vec<String>, String> {
        let units = client.units().map_err(|e| e.to_string())?;
        let machines = client.machines().map_err(|e| e.to_string())?;
        let observed = Observed {
            units: units
                .iter()
                .map(|unit| {
                    let constraints =
                        Requirements::for_unit(&unit.unit_file(), &unit.name).constraints();
                    let launched = unit.desired_state == "launched";
                    (unit.name.clone(), (constraints, launched))
                })
                .collect(),
            moved_from: units
                .iter()
                .map(|unit| {
                    let from = unit
                        .failures
                        .iter()
                        .filter(|f| f.action.starts_with("moved "))
                        .map(|f| f.machine_id.clone())
                        .collect();
                    let attempts = fleet_unit::health::reschedule_policy(&unit.unit_file())
                        .unwrap_or_default()
                        .attempts;
                    (unit.name.clone(), (from, attempts))
                })
                .collect(),
            related: units
                .iter()
                .map(|unit| {
                    let related = fleet_unit::relations::related(
                        &unit.unit_file(),
                        &unit.name,
                        fleet_unit::relations::PLACED_TOGETHER,
                    );
                    (unit.name.clone(), related)
                })
                .collect(),
            hosts: self.running(),
            machines: machines
                .into_iter()
                .map(|m| Machine {
                    metadata: m.metadata,
                    ..Machine::new(MachineId::new(m.id).expect("the API gives valid machine IDs"))
                })
                .collect(),
        };
        // Units may be stopped or unplaceable here, and a peer may be stopped: the rules that
        // need everything launched and placed are the benchmark's. The hosts are there from
        // the start, so a unit goes back where it failed only when every other host failed it.
        let strictness = Strictness {
            failed_machines_last: true,
            ..Strictness::default()
        };
        Ok(violations(&observed, strictness))
    }

    /// Waits (at most `within`) until every invariant holds and `settled` says the cluster
    /// is where the test wants it.
    pub fn until_valid(
        &self,
        what: &str,
        within: Duration,
        settled: impl Fn(&BTreeMap<String, Vec<String>>) -> Result<(), String>,
    ) -> BTreeMap<String, Vec<String>> {
        self.eventually(what, within, || {
            let violations = self.violations()?;
            if !violations.is_empty() {
                return Err(format!("violations: {violations:?}"));
            }
            let running = self.running();
            settled(&running).map_err(|e| format!("{e}; running: {running:?}"))?;
            Ok(running)
        })
    }
}

impl Drop for Cluster {
    /// Every fleetd, then every process left on the hosts (units and their shims outlive a
    /// killed fleetd by design), by PID, before the namespaces go.
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_host(i);
        }
    }
}

impl Cluster {
    /// Host `i` dies: its fleetd and every process in its namespace are killed (SIGKILL).
    pub fn kill_host(&mut self, i: usize) {
        // Its systemd and everything under it.
        drop(self.hosts[i].systemd.take());
        let _ = self.signal_fleetd(i, "-KILL");
        let namespace = self.network.namespace(i);
        let Ok(output) = Command::new("ip")
            .args(["netns", "pids", &namespace])
            .output()
        else {
            return;
        };
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}
