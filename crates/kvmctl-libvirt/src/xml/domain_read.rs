//! Domains: what kvmctl reads back from libvirt's definitions (type, NVRAM, agent channel,
//! devices, identity).

use super::DomainType;

/// The type of a domain definition (`<domain type='kvm'>`); `None` for another type or a
/// document that is not a domain.
pub fn domain_type_of(domain_xml: &str) -> Option<DomainType> {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) | Ok(E::Empty(e)) => {
                if e.name().as_ref() != b"domain" {
                    return None;
                }
                let t = e.attributes().flatten().find(|a| a.key.as_ref() == b"type")?.unescape_value().ok()?;
                return match t.as_ref() {
                    "kvm" => Some(DomainType::Kvm),
                    "qemu" => Some(DomainType::Qemu),
                    _ => None,
                };
            }
            Ok(E::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// The file of a UEFI domain's variable store (`<os><nvram>`), when it has one.
pub fn domain_nvram(domain_xml: &str) -> Option<std::path::PathBuf> {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) => path.push(e.name().as_ref().to_vec()),
            Ok(E::End(_)) => {
                path.pop();
            }
            Ok(E::Text(t)) if path.len() == 3 && path[1] == b"os" && path[2] == b"nvram" => {
                let text = t.unescape().ok()?;
                let text = text.trim();
                return (!text.is_empty()).then(|| std::path::PathBuf::from(text));
            }
            Ok(E::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// Whether a running domain's guest agent is connected: its `org.qemu.guest_agent.0`
/// channel's target has `state='connected'` (libvirt's live XML; the guest opened the port).
pub fn guest_agent_connected(domain_xml: &str) -> bool {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    loop {
        let (e, empty) = match reader.read_event() {
            Ok(E::Start(e)) => (e, false),
            Ok(E::Empty(e)) => (e, true),
            Ok(E::End(_)) => {
                path.pop();
                continue;
            }
            Ok(E::Eof) | Err(_) => return false,
            _ => continue,
        };
        let inside_channel = path.len() == 3 && path[1] == b"devices" && path[2] == b"channel";
        if inside_channel && e.name().as_ref() == b"target" {
            let attr = |k: &[u8]| e.attributes().flatten().find(|a| a.key.as_ref() == k).map(|a| a.value.into_owned());
            if attr(b"name").as_deref() == Some(b"org.qemu.guest_agent.0") && attr(b"state").as_deref() == Some(b"connected") {
                return true;
            }
        }
        if !empty {
            path.push(e.name().as_ref().to_vec());
        }
    }
}

/// What a domain's devices use: the MAC addresses of its interfaces (lower case) and the
/// files of its disks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainDevices {
    pub macs: Vec<String>,
    pub disk_files: Vec<String>,
    /// The disks' guest devices (`vda`, `sdd`).
    pub disk_targets: Vec<String>,
}

/// Reads the interfaces' MACs and the disks' source files and targets of a domain definition.
pub fn domain_devices(domain_xml: &str) -> DomainDevices {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    let mut out = DomainDevices::default();
    let (mut in_iface, mut in_disk) = (false, false);
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) if e.name().as_ref() == b"interface" => in_iface = true,
            Ok(E::End(e)) if e.name().as_ref() == b"interface" => in_iface = false,
            Ok(E::Start(e)) if e.name().as_ref() == b"disk" => in_disk = true,
            Ok(E::End(e)) if e.name().as_ref() == b"disk" => in_disk = false,
            Ok(E::Start(e)) | Ok(E::Empty(e)) => {
                let attr = |name: &[u8]| {
                    e.attributes().flatten().find(|a| a.key.as_ref() == name).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                match e.name().as_ref() {
                    b"mac" if in_iface => out.macs.extend(attr(b"address").map(|m| m.to_ascii_lowercase())),
                    b"source" if in_disk => out.disk_files.extend(attr(b"file")),
                    b"target" if in_disk => out.disk_targets.extend(attr(b"dev")),
                    _ => {}
                }
            }
            Ok(E::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// A domain definition's `<name>` and `<uuid>` (the root's own children).
pub fn domain_identity(domain_xml: &str) -> (Option<String>, Option<String>) {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(domain_xml);
    let (mut depth, mut field, mut name, mut uuid) = (0usize, None::<bool>, None, None);
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) => {
                depth += 1;
                field = (depth == 2).then(|| e.name().as_ref() == b"name").filter(|_| matches!(e.name().as_ref(), b"name" | b"uuid"));
            }
            Ok(E::Text(t)) if field.is_some() => {
                let text = t.unescape().map(|v| v.trim().to_owned()).unwrap_or_default();
                if field == Some(true) {
                    name = Some(text);
                } else {
                    uuid = Some(text);
                }
            }
            Ok(E::End(_)) => {
                depth = depth.saturating_sub(1);
                field = None;
            }
            Ok(E::Eof) | Err(_) => break,
            _ => {}
        }
    }
    (name, uuid)
}
