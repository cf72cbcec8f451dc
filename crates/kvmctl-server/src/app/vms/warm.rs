//! Warm clones: a clone woken from the memory of a snapshot instead of booted.
//!
//! libvirt restores a saved domain only under the name and UUID it was saved with, so the
//! clone gets a copy of the source's saved-domain image whose embedded definition is the
//! clone's own (libvirt's save format: a fixed header, the domain XML and a cookie inside a
//! padded area of `data_len` bytes, then QEMU's migration stream, which is copied unchanged;
//! see docs/adr/0012). The clone wakes as itself to libvirt (its MAC), but QEMU's device
//! state carries the source's MAC: the woken guest believes it is the source.
//! `reidentify_script`, run as root, gives it the clone's hostname, machine-id, VM key, SSH
//! host key and the host's clock, then moves its NIC to the clone's MAC and reserved address.
//! Whether the guest's agent was connected is recorded when the memory snapshot is taken, and
//! decides how it runs:
//!
//! - through the guest agent: the NIC wakes with its link down and no filter, and one update
//!   builds the clone's own filter and raises the link while the script runs; no network is
//!   needed, and the guest never gets to use the source's identity;
//! - else over SSH at the source's address (the source's VM key, holding its pinned host
//!   key): the NIC wakes with its filter widened to the source's MAC and address as well (a
//!   guest whose DHCP client saw its link go down would drop that address), narrowed in the
//!   background once the clone has moved. Such wakes take turns (`WAKE_LOCK`, held from before
//!   the restore until the narrowing is done) and the source must be stopped, so at most one
//!   guest may use the source's identity at any time. A guest whose agent was expected but
//!   does not answer within 30 s is widened and taken this way too.

use super::*;
use kvmctl_cloudinit::seed::HostKey;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const SAVE_MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// magic, then version, data_len, was_running, format, cookie offset and 14 unused u32s.
const HEADER_LEN: usize = 16 + 4 * 19;
/// The largest header data area accepted (libvirt writes the XML plus 64 KiB of padding).
const DATA_MAX: u32 = 16 << 20;

/// One warm wake over SSH at a time, from widening the clone's NIC filter to its source's
/// MAC and address until it is narrowed again.
static WAKE_LOCK: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> = std::sync::LazyLock::new(Default::default);

/// Copies libvirt's saved-domain image `from` to `to` with `xml` as its domain definition
/// (the cookie, the padding's size and the migration stream unchanged). Refuses an image it
/// does not understand: another version, a compressed one, or a definition that would not
/// fit the padded area.
pub(crate) fn save_image_rewrite(from: &Path, to: &Path, xml: &str) -> Result<(), String> {
    let mut src = std::fs::File::open(from).map_err(|e| format!("cannot open {}: {e}", from.display()))?;
    let mut header = [0u8; HEADER_LEN];
    src.read_exact(&mut header).map_err(|e| format!("{}: no saved-domain header: {e}", from.display()))?;
    let word = |i: usize| u32::from_le_bytes(header[16 + 4 * i..20 + 4 * i].try_into().expect("4 bytes"));
    let (version, data_len, format, cookie_at) = (word(0), word(1), word(3), word(4));
    if &header[..16] != SAVE_MAGIC || version != 2 {
        return Err(format!("{} is not a complete libvirt saved-domain image of version 2", from.display()));
    }
    if format != 0 {
        return Err(format!("{} is compressed (format {format}); warm clones need an uncompressed image", from.display()));
    }
    if data_len > DATA_MAX || cookie_at > data_len {
        return Err(format!("{}: implausible header (data {data_len} bytes, cookie at {cookie_at})", from.display()));
    }
    let mut data = vec![0u8; data_len as usize];
    src.read_exact(&mut data).map_err(|e| format!("{}: truncated header data: {e}", from.display()))?;
    let cookie: &[u8] = if cookie_at > 0 {
        let rest = &data[cookie_at as usize..];
        let end = rest.iter().position(|b| *b == 0).map(|p| p + 1).unwrap_or(rest.len());
        &rest[..end]
    } else {
        &[]
    };
    let mut area = Vec::with_capacity(data_len as usize);
    area.extend_from_slice(xml.as_bytes());
    area.push(0);
    let new_cookie_at = if cookie.is_empty() { 0 } else { area.len() as u32 };
    area.extend_from_slice(cookie);
    if area.len() > data_len as usize {
        return Err(format!("the clone's definition ({} bytes) does not fit the image's {data_len}", xml.len()));
    }
    area.resize(data_len as usize, 0);
    header[32..36].copy_from_slice(&new_cookie_at.to_le_bytes());
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let copied = (|| -> std::io::Result<()> {
        out.write_all(&header)?;
        out.write_all(&area)?;
        src.seek(SeekFrom::Start((HEADER_LEN + data_len as usize) as u64))?;
        std::io::copy(&mut src, &mut out)?;
        out.sync_all()
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(to);
        format!("cannot write {}: {e}", to.display())
    })
}

/// What the woken guest runs to become the clone (as root: directly, or through `sudo -n`).
/// Every value put in it is validated or generated (names are DNS labels, MACs hex, keys
/// base64), and none holds a single quote, so the script travels inside one.
#[derive(Clone, Copy)]
pub(crate) struct Reidentify<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub user: &'a str,
    pub old_mac: &'a str,
    pub new_mac: &'a str,
    pub vm_public_key: &'a str,
    pub host_key: Option<&'a HostKey>,
    /// 32 hex digits, the clone's new /etc/machine-id.
    pub machine_id: &'a str,
    pub epoch: i64,
    /// The clone's reserved address, its prefix and the network's gateway: set at once, so
    /// the clone answers there without waiting for its DHCP client (which then takes the
    /// same address over, as it is reserved for the clone's MAC).
    pub address: Option<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr)>,
    /// Over SSH: the NIC moves after the script has returned, detached (moving it ends the
    /// session). Through the agent: before, once the link is up (the wake raises it meanwhile),
    /// so the clone answers at its address when the script returns.
    pub detach: bool,
}

pub(crate) fn reidentify_script(r: &Reidentify) -> Result<String, Error> {
    let Reidentify { source, name, user, old_mac, new_mac, vm_public_key, host_key, machine_id, epoch, address, detach } = r;
    // Each process the guest starts costs it about 0.1 s under emulation: the script runs
    // the shell's builtins where it can (reads, writes, tests), and `ip` once for the NIC.
    let (ip_batch, ip_each, dhcp_udhcpc) = match address {
        Some((ip, prefix, gw)) => (
            format!("addr add {ip}/{prefix} dev $IF\nroute replace default via {gw} dev $IF\n"),
            format!("ip -4 addr add {ip}/{prefix} dev \"$IF\"\nip -4 route replace default via {gw} dev \"$IF\" 2>/dev/null || true\n"),
            // The address is set: a one-shot client has nothing left to do.
            ":".to_owned(),
        ),
        None => (String::new(), String::new(), format!("udhcpc -i \"$IF\" -s /etc/udhcpc.script -q -n -t 20 -T 1 -x hostname:{name}")),
    };
    let host_key_part = match host_key {
        Some(k) => {
            let (private, public) = (k.private_openssh.trim_end(), k.public.trim());
            if [private, public].iter().any(|v| v.contains(['"', '$', '`', '\\', '\''])) {
                return Err(Error::Internal("the clone's host key holds a character the script cannot quote".into()));
            }
            format!(
                "umask 077\nprintf \"%s\\n\" \"{private}\" > /etc/ssh/ssh_host_ed25519_key\numask 022\n\
                 printf \"%s\\n\" \"{public}\" > /etc/ssh/ssh_host_ed25519_key.pub\n\
                 if [ -f /run/sshd.pid ]; then read -r p < /run/sshd.pid; kill -HUP \"$p\" || true; fi\n"
            )
        }
        None => String::new(),
    };
    // The NIC moves to the clone's MAC (and address): `ip` once with a batch, or command by
    // command where `ip` has no batch mode (busybox); then the guest waits for the link (up
    // to 10 s). The link's bounce makes systemd-networkd lease again under the new MAC (it
    // drops its lease with the carrier; a `networkctl reconfigure` would also drop the
    // address set here); other DHCP clients are asked to.
    let network = format!(
        "ip -force -batch - >/dev/null 2>&1 <<KVMCTL_IP || true\nlink set dev $IF down\naddr flush dev $IF\nlink set dev $IF address {new_mac}\nlink set dev $IF up\n{ip_batch}KVMCTL_IP\n\
         a=; read -r a < /sys/class/net/$IF/address || true\n\
         if [ \"$a\" != {new_mac} ]; then\nip link set dev \"$IF\" down\nip -4 addr flush dev \"$IF\"\nip link set dev \"$IF\" address {new_mac}\nip link set dev \"$IF\" up\n{ip_each}fi\n\
         n=0\nwhile [ $n -lt 200 ]; do c=; read -r c < /sys/class/net/$IF/carrier 2>/dev/null || true; if [ \"$c\" = 1 ]; then break; fi; sleep 0.05 2>/dev/null || sleep 1; n=$((n+1)); done\n\
         if [ -e /run/systemd/netif/state ]; then :\n\
         elif command -v dhclient >/dev/null 2>&1; then dhclient \"$IF\"\n\
         elif [ -x /etc/udhcpc.script ]; then {dhcp_udhcpc}\n\
         else udhcpc -i \"$IF\" -q -n -t 20 -T 1; fi\n"
    );
    // Over SSH the network part runs detached, holding none of the session's descriptors
    // (sshd keeps a channel open while anything holds them): moving the NIC ends the session;
    // it waits a moment for the session to end with the script's exit status. Through the
    // agent it runs in line while the host raises the link, so the clone answers at its
    // address when the script returns.
    let network = if *detach {
        format!(
            "{{ echo \"IF=$IF\"; echo \"sleep 0.2\"; cat <<\\KVMCTL_NET\n{network}KVMCTL_NET\n}} > /run/kvmctl-reidentify\n\
             (setsid sh /run/kvmctl-reidentify || sh /run/kvmctl-reidentify) </dev/null >/dev/null 2>&1 &\n"
        )
    } else {
        network
    };
    let script = format!(
        "set -e\nIF=\nfor d in /sys/class/net/*; do a=; read -r a < \"$d/address\" 2>/dev/null || true; if [ \"$a\" = {old_mac} ]; then IF=\"${{d##*/}}\"; fi; done\n\
         [ -n \"$IF\" ] || {{ echo \"no interface has the source MAC {old_mac}\" >&2; exit 3; }}\n\
         echo \"kvmctl: woken from a memory snapshot as {name}\" > /dev/console 2>/dev/null || true\n\
         date -u -s @{epoch} >/dev/null 2>&1 || true\n\
         {{ echo {name} > /proc/sys/kernel/hostname; }} 2>/dev/null || hostname {name}\necho {name} > /etc/hostname\n\
         sed -i -e \"s/\\([[:space:]]\\){source}\\([.[:space:]]\\)/\\1{name}\\2/g\" -e \"s/\\([[:space:]]\\){source}\\$/\\1{name}/\" /etc/hosts 2>/dev/null || true\n\
         if [ -s /etc/machine-id ]; then echo {machine_id} > /etc/machine-id; fi\n\
         if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then echo {machine_id} > /var/lib/dbus/machine-id; fi\n\
         h=\nwhile IFS=: read -r u _ _ _ _ d _; do if [ \"$u\" = {user} ]; then h=$d; fi; done < /etc/passwd\n\
         printf \"%s\\n\" \"{vm_public_key}\" >> \"$h/.ssh/authorized_keys\"\n\
         sed -i \"/ kvmctl-{source}\\$/d\" \"$h/.ssh/authorized_keys\"\n\
         {host_key_part}\
         {network}",
    );
    if script.contains('\'') {
        return Err(Error::Internal("the re-identification script would hold a single quote".into()));
    }
    Ok(script)
}

/// The script for a login as the VM's user: run as root directly, or through `sudo -n`.
fn as_root(script: &str) -> String {
    format!("if [ \"$(id -u)\" = 0 ]; then sh -c '{script}'; else sudo -n sh -c '{script}'; fi")
}

/// What a warm clone wakes from, and the identity it takes.
pub(crate) struct WarmStart {
    pub src: VmRecord,
    /// The source snapshot's saved-domain image.
    pub save: PathBuf,
    pub vm_public_key: String,
    /// The clone's SSH host key (the one its seed also holds), for cloud-init images.
    pub host_key: Option<HostKey>,
    /// The guest's agent was connected when the snapshot was taken: it is re-identified
    /// through it, and its NIC wakes with the link down.
    pub agent: bool,
}

/// Starts the defined clone `rec` from the memory in `w` and makes it the clone (see the
/// module docs). Returns once it answers at its own address.
pub(super) async fn wake(ctx: &Context, rec: &VmRecord, w: &WarmStart, xmls: &crate::app::domain::WakeXml) -> Result<(), Error> {
    let (src, save, vm_public_key, host_key) = (&w.src, &w.save, w.vm_public_key.as_str(), w.host_key.as_ref());
    let (Some(old_ip), Some(new_ip)) = (src.ip.as_deref(), rec.ip.as_deref()) else {
        return Err(Error::invalid("warm", "warm clones need a managed network with reserved addresses (the source's and the clone's)"));
    };
    let old_ip: std::net::IpAddr = old_ip.parse().map_err(|e| Error::Internal(format!("source address {old_ip}: {e}")))?;
    let new_ip: std::net::IpAddr = new_ip.parse().map_err(|e| Error::Internal(format!("clone address {new_ip}: {e}")))?;
    let dir = ctx.config.snapshot_dir.join(rec.id.to_string());
    std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let image = dir.join("warm.save");
    let _ = std::fs::remove_file(&image);
    let t = Instant::now();
    let mut phases = Vec::new();
    let mut phase = |name: &'static str, since: &mut Instant| {
        phases.push(format!("{name}={}", since.elapsed().as_millis()));
        *since = Instant::now();
    };
    let mut since = t;
    // A guest without an agent wakes able to use its source's identity (its NIC's filter is
    // widened to it): such wakes take turns from before the restore until it is narrowed.
    let mut wake_lock = match w.agent || xmls.wide_nic.is_none() {
        true => None,
        false => Some(WAKE_LOCK.clone().lock_owned().await),
    };
    phase("turn", &mut since);
    let (from, to, def) = (save.to_path_buf(), image.clone(), xmls.definition.clone());
    blocking(move || save_image_rewrite(&from, &to, &def)).await?.map_err(Error::Conflict)?;
    phase("image", &mut since);
    let restored = ctx.local_node.domain_restore(&image, true).await;
    let _ = std::fs::remove_file(&image);
    restored?;
    phase("restore", &mut since);
    let machine_id = uuid::Uuid::new_v4().simple().to_string();
    let identity = Reidentify {
        source: src.name.as_str(),
        name: rec.name.as_str(),
        user: &rec.ssh_user,
        old_mac: &src.mac,
        new_mac: &rec.mac,
        vm_public_key,
        host_key,
        machine_id: &machine_id,
        epoch: ctx.clock.now(),
        address: static_address(ctx, rec, new_ip).await,
        detach: false,
    };
    // The clock it sets is the host's when the script is sent, not when it was written.
    let script = |r: Reidentify| reidentify_script(&Reidentify { epoch: ctx.clock.now(), ..r });
    let mut via_agent = false;
    if w.agent {
        // Its NIC woke with the link down and no filter (when it has one): one update builds
        // its own filter, then raises the link, while its agent re-identifies it (the script's
        // network part waits for the link).
        let by_agent_script = script(identity)?;
        let joined = Instant::now();
        let raise = async {
            let r = match &xmls.own_nic {
                Some(nic) => ctx.local_node.domain_interface_update(rec.name.as_str(), nic).await,
                None => Ok(()),
            };
            (r, joined.elapsed().as_millis())
        };
        // The agent was connected when the snapshot was taken: libvirt may take a moment to
        // reach it again after the restore.
        let agent = async { (by_agent(ctx, rec, &by_agent_script, Duration::from_secs(30)).await, joined.elapsed().as_millis()) };
        let ((raised, link_ms), (answered, agent_ms)) = tokio::join!(raise, agent);
        tracing::debug!(vm = %rec.name, link_ms, agent_ms, "the warm clone's link is up and its agent done");
        raised?;
        via_agent = answered?;
        phase("agent+link", &mut since);
        if !via_agent {
            tracing::warn!(vm = %rec.name, "the warm clone's agent did not answer; re-identifying it over SSH");
            wake_lock = Some(WAKE_LOCK.clone().lock_owned().await);
            if let Some(wide) = &xmls.wide_nic {
                ctx.local_node.domain_interface_update(rec.name.as_str(), wide).await?;
            }
        }
    }
    let narrow_after = if via_agent {
        // The woken guest never used its source's identity: its filter allowed only its own.
        None
    } else {
        clock_sync(ctx, rec).await;
        // The woken guest is reached where it believes it is, at the source's address. The
        // bridge may still send the source's MAC to an earlier clone's port (it learnt it
        // there while that one woke): the guest's NIC announces itself (QEMU's announce-self,
        // from the MAC the guest uses), which the widened filter lets through.
        if let Err(e) = ctx.local_node.domain_announce(rec.name.as_str()).await {
            tracing::info!(vm = %rec.name, error = %e, "the woken clone's NIC could not announce itself");
        }
        phase("announce", &mut since);
        by_ssh(ctx, src, rec, old_ip, || script(Reidentify { detach: true, ..identity })).await?;
        phase("login+script", &mut since);
        wake_lock
    };
    // The agent's clock is the host's to the nanosecond (the script's, to the second), set
    // while the clone's address comes up.
    let clock = async {
        if via_agent {
            clock_sync(ctx, rec).await;
        }
    };
    let (moved, ()) = tokio::join!(answers_at(rec, new_ip), clock);
    moved?;
    phase("moved", &mut since);
    tracing::info!(vm = %rec.name, source = %src.name, ip = %new_ip, via_agent, elapsed_ms = t.elapsed().as_millis() as u64, phases = %phases.join(" "), "warm clone woken and re-identified");
    // The filter narrows to the clone's own MAC and address (libvirt takes about 2 s to
    // rebuild it, so the clone is answered ready meanwhile); the next wake waits for it.
    if let (Some(held), Some(nic)) = (narrow_after, &xmls.own_nic) {
        let (node, name, nic) = (ctx.local_node.clone(), rec.name.to_string(), nic.clone());
        tokio::spawn(async move {
            let _held = held;
            narrow(&node, &name, &nic).await;
        });
    }
    Ok(())
}

/// Sets the woken guest's clock to the host's through its agent (to the nanosecond); without
/// an answer, the re-identification script's second-precise clock stays.
async fn clock_sync(ctx: &Context, rec: &VmRecord) {
    if let Err(e) = ctx.local_node.domain_clock_sync(rec.name.as_str()).await {
        tracing::info!(vm = %rec.name, error = %e, "the warm clone's clock is set by its re-identification only");
    }
}

/// Until the clone answers SSH at its own address (it has left the source's by then).
async fn answers_at(rec: &VmRecord, new_ip: std::net::IpAddr) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connect = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect((new_ip, 22))).await;
        if matches!(connect, Ok(Ok(_))) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Conflict(format!(
                "the warm clone {} did not come up at its address {new_ip} (its DHCP renewal failed?); see `kvmctl vm console {} --log`",
                rec.name, rec.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the script as root through the guest agent, asking again for up to `patience` while
/// it does not answer (libvirt may take a moment to reach it again after the restore, longer
/// on a loaded host); `false` when it never did.
async fn by_agent(ctx: &Context, rec: &VmRecord, script: &str, patience: Duration) -> Result<bool, Error> {
    let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let deadline = Instant::now() + patience;
    for attempt in 0.. {
        if attempt > 0 && Instant::now() >= deadline {
            break;
        }
        match ctx.local_node.domain_agent_exec(rec.name.as_str(), argv.clone(), 30).await {
            Ok(out) if out.exit_code == 0 => return Ok(true),
            Ok(out) => {
                return Err(Error::Conflict(format!(
                    "the warm clone {} could not take its identity (exit {}): {}",
                    rec.name,
                    out.exit_code,
                    out.stderr.trim().chars().take(400).collect::<String>()
                )))
            }
            Err(e) => {
                tracing::debug!(vm = %rec.name, attempt, error = %e, "no answer from the guest agent");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(false)
}

/// Logs in at the source's address (the source's VM key, holding the source's pinned host
/// key) and runs the script as root.
async fn by_ssh(
    ctx: &Context,
    src: &VmRecord,
    rec: &VmRecord,
    old_ip: std::net::IpAddr,
    script: impl Fn() -> Result<String, Error>,
) -> Result<(), Error> {
    let key = ssh::key_path(&ctx.config.key_dir, &src.id);
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let tried = async {
            let s = ssh::login(std::net::SocketAddr::new(old_ip, 22), &src.ssh_user, &key, src.host_key.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let command = match script() {
                Ok(sc) => as_root(&sc),
                Err(e) => {
                    s.close().await;
                    return Err(e.to_string());
                }
            };
            let out = s.exec(&command, 64 * 1024).await;
            s.close().await;
            out
        }
        .await;
        match tried {
            Ok(out) => break out,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(vm = %rec.name, error = %e, "the woken guest does not answer at the source's address yet");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                return Err(Error::Conflict(format!(
                    "the warm clone {} did not answer at its source's address {old_ip} within 60 s ({e}); clone without --warm",
                    rec.name
                )))
            }
        }
    };
    if out.exit_status != 0 {
        return Err(Error::Conflict(format!(
            "the warm clone {} could not take its identity (exit {}): {}; it needs a guest agent, root or sudo without a password",
            rec.name,
            out.exit_status,
            String::from_utf8_lossy(&out.stderr).trim().chars().take(400).collect::<String>()
        )));
    }
    Ok(())
}

/// Replaces the woken clone's NIC filter by its own; if libvirt refuses twice, the clone is
/// powered off rather than left able to use its source's identity.
async fn narrow(node: &crate::node::NodeHandle, name: &str, nic: &str) {
    for attempt in 1..=2 {
        match node.domain_interface_update(name, nic).await {
            Ok(()) => return,
            // Gone or stopped meanwhile: nothing runs with the wide filter.
            Err(e) if e.is_not_found() || matches!(node.domain_state(name).await, Ok(s) if s != kvmctl_libvirt::DomainState::Running) => {
                return
            }
            Err(e) => tracing::warn!(vm = name, attempt, error = %e, "cannot narrow the warm clone's NIC filter"),
        }
    }
    tracing::error!(vm = name, "powering the warm clone off: its NIC filter could not be narrowed to its own address");
    let _ = node.domain_destroy(name).await;
}

/// The clone's address with its network's prefix and gateway (the host's address on it),
/// for a libvirt network on the local node; `None` (DHCP alone) otherwise.
async fn static_address(ctx: &Context, rec: &VmRecord, ip: std::net::IpAddr) -> Option<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr)> {
    let std::net::IpAddr::V4(ip) = ip else { return None };
    let kvmctl_core::rules::Attachment::Network(net) = kvmctl_core::rules::Attachment::parse(&rec.network) else { return None };
    let info = xml::network_info(&ctx.local_node.network_xml(&net).await.ok()?);
    let (gw, prefix) = info.ipv4?;
    Some((ip, prefix, gw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(xml: &str, cookie: &str, stream: &[u8]) -> Vec<u8> {
        let data_len = xml.len() + 1 + cookie.len() + 1 + 65536;
        let mut v = SAVE_MAGIC.to_vec();
        for w in [2u32, data_len as u32, 1, 0, (xml.len() + 1) as u32] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&[0u8; 56]);
        let mut area = format!("{xml}\0{cookie}\0").into_bytes();
        area.resize(data_len, 0);
        v.extend_from_slice(&area);
        v.extend_from_slice(stream);
        v
    }

    #[test]
    fn rewrite_replaces_the_definition_and_keeps_cookie_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        let stream: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&from, image("<domain><name>a</name></domain>", "<cookie/>", &stream)).unwrap();
        save_image_rewrite(&from, &to, "<domain><name>clone-b</name></domain>").unwrap();
        let a = std::fs::read(&from).unwrap();
        let b = std::fs::read(&to).unwrap();
        assert_eq!(a.len(), b.len(), "the stream stays where it was");
        assert_eq!(&a[a.len() - stream.len()..], &b[b.len() - stream.len()..]);
        let cookie_at = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
        let area = &b[HEADER_LEN..];
        assert_eq!(&area[..cookie_at], b"<domain><name>clone-b</name></domain>\0");
        assert!(area[cookie_at..].starts_with(b"<cookie/>\0"));
    }

    #[test]
    fn rewrite_refuses_what_it_does_not_understand() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        let mut img = image("<d/>", "", b"stream");
        img[28] = 1; // gzip
        std::fs::write(&from, &img).unwrap();
        assert!(save_image_rewrite(&from, &to, "<x/>").unwrap_err().contains("compressed"));
        std::fs::write(&from, b"LibvirtQemudPart not complete").unwrap();
        assert!(save_image_rewrite(&from, &to, "<x/>").is_err());
        std::fs::write(&from, image("<d/>", "", b"s")).unwrap();
        let huge = "x".repeat(70_000);
        assert!(save_image_rewrite(&from, &to, &huge).unwrap_err().contains("does not fit"));
        assert!(!to.exists(), "nothing is left of a refused rewrite");
    }

    #[test]
    fn script_is_one_single_quoted_word_with_the_new_identity() {
        let key = HostKey {
            private_openssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            public: "ssh-ed25519 AAAA root@b".into(),
        };
        let s = reidentify_script(&Reidentify {
            source: "src-1",
            name: "clone-2",
            user: "alice",
            old_mac: "52:54:00:00:00:01",
            new_mac: "52:54:00:00:00:02",
            vm_public_key: "ssh-ed25519 BBBB kvmctl-clone-2",
            host_key: Some(&key),
            machine_id: "0123456789abcdef0123456789abcdef",
            epoch: 1_800_000_000,
            address: Some(("10.0.0.7".parse().unwrap(), 24, "10.0.0.1".parse().unwrap())),
            detach: true,
        })
        .unwrap();
        assert!(!s.contains('\''), "{s}");
        assert_eq!(as_root(&s).matches('\'').count(), 4, "two single-quoted copies: {s}");
        for needle in [
            "hostname clone-2",
            "address 52:54:00:00:00:02",
            "= 52:54:00:00:00:01",
            "@1800000000",
            "kvmctl-src-1",
            "BBBB kvmctl-clone-2",
            "BEGIN OPENSSH",
        ] {
            assert!(s.contains(needle), "{needle} missing from {s}");
        }
    }
}
