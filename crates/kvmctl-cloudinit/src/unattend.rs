//! Windows Setup answer files: `autounattend.xml` and a first-logon script, on an ISO of
//! their own (Windows Setup reads `autounattend.xml` from the root of any removable drive).
//!
//! The file takes the install from the first screen to the desktop without a click: the
//! language and locale, the whole first disk wiped and partitioned for UEFI (EFI, MSR,
//! Windows), the edition by its name in the install image, the virtio drivers loaded from
//! the virtio-win ISO during setup (so the virtio disk is found), the computer's name and
//! time zone, the out-of-box pages skipped, one local administrator, and at the first logon
//! the virtio-win guest tools (drivers and the QEMU guest agent) installed. Windows 11's TPM
//! 2.0 and Secure Boot checks need no bypass: the profile's VM has both.
//!
//! Every value is validated against what Windows accepts and XML-escaped; nothing a caller
//! gives is pasted into the document as markup.

use base64::Engine as _;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct UnattendError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> UnattendError {
    UnattendError { field: field.into(), message: message.into() }
}

/// What the answer file says.
#[derive(Clone, PartialEq, Eq)]
pub struct UnattendSpec {
    /// The computer's name (NetBIOS: 1-15 letters, digits, `-`, not all digits).
    pub computer_name: String,
    /// The local administrator's account.
    pub user: String,
    pub password: String,
    /// `en-US`, `de-DE`...: UI language, input, system and user locale.
    pub locale: String,
    /// A Windows time zone name (`UTC`, `W. Europe Standard Time`).
    pub time_zone: String,
    /// The edition to install, by its name in the install image (`Windows 11 Pro`).
    pub edition: String,
    /// A product key (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`); without one, setup goes on without
    /// asking and Windows is activated later.
    pub product_key: Option<String>,
}

impl std::fmt::Debug for UnattendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnattendSpec")
            .field("computer_name", &self.computer_name)
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .field("locale", &self.locale)
            .field("time_zone", &self.time_zone)
            .field("edition", &self.edition)
            .field("product_key", &self.product_key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// The ISO's volume label.
pub const LABEL: &str = "KVMCTL-UNATTEND";

/// The first-logon script's name on the ISO.
pub const SETUP_SCRIPT: &str = "kvmctl-setup.cmd";

/// Drive letters the CD-ROMs may get (the installer, virtio-win and this ISO).
const LETTERS: [char; 6] = ['D', 'E', 'F', 'G', 'H', 'I'];

/// Drivers Windows Setup loads from virtio-win: block, SCSI, network.
const SETUP_DRIVERS: [&str; 3] = ["viostor", "vioscsi", "NetKVM"];

fn check(spec: &UnattendSpec) -> Result<(), UnattendError> {
    let name = &spec.computer_name;
    if !(1..=15).contains(&name.len())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.chars().all(|c| c.is_ascii_digit())
    {
        return Err(err("name", format!("{name:?} cannot be a Windows computer name: 1-15 letters, digits and '-', not all digits")));
    }
    let user = &spec.user;
    let reserved = ["administrator", "guest", "defaultaccount", "system"];
    if !(1..=20).contains(&user.chars().count())
        || user.chars().any(|c| c.is_control() || "\"/\\[]:;|=,+*?<>@".contains(c))
        || user.trim() != user
        || user.ends_with('.')
        || reserved.contains(&user.to_ascii_lowercase().as_str())
    {
        return Err(err(
            "user",
            format!("{user:?} cannot be a Windows account name: 1-20 characters, none of \"/\\[]:;|=,+*?<>@, not a built-in account"),
        ));
    }
    let pw = &spec.password;
    if !(8..=127).contains(&pw.chars().count()) || pw.chars().any(|c| c.is_control()) {
        return Err(err("password", "must be 8-127 characters without control characters"));
    }
    let l = spec.locale.as_bytes();
    let locale_ok = l.len() == 5 && l[..2].iter().all(u8::is_ascii_lowercase) && l[2] == b'-' && l[3..].iter().all(u8::is_ascii_uppercase);
    if !locale_ok {
        return Err(err("locale", format!("{:?} is not a locale like en-US", spec.locale)));
    }
    let tz = &spec.time_zone;
    if !(1..=64).contains(&tz.len()) || !tz.chars().all(|c| c.is_ascii_alphanumeric() || " ().+-_".contains(c)) {
        return Err(err("time_zone", format!("{tz:?} is not a Windows time zone name like UTC or W. Europe Standard Time")));
    }
    let ed = &spec.edition;
    if !(1..=64).contains(&ed.len()) || !ed.chars().all(|c| c.is_ascii_alphanumeric() || " ().-".contains(c)) {
        return Err(err("edition", format!("{ed:?} is not an edition name like Windows 11 Pro")));
    }
    if let Some(k) = &spec.product_key {
        let groups: Vec<&str> = k.split('-').collect();
        if groups.len() != 5 || !groups.iter().all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(err("product_key", "must be five groups of five letters or digits, XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"));
        }
    }
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// How answer files hide a password (not a hash: Windows Setup needs the password itself):
/// base64 of UTF-16LE of the password followed by the element's name.
fn password_value(password: &str, element: &str) -> String {
    let utf16: Vec<u8> = format!("{password}{element}").encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(utf16)
}

const COMPONENT: &str = "processorArchitecture=\"amd64\" publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\"";

/// `autounattend.xml` for `spec`.
pub fn autounattend_xml(spec: &UnattendSpec) -> Result<String, UnattendError> {
    check(spec)?;
    let locale = esc(&spec.locale);
    let locales = format!(
        "<InputLocale>{locale}</InputLocale><SystemLocale>{locale}</SystemLocale><UILanguage>{locale}</UILanguage><UserLocale>{locale}</UserLocale>"
    );
    let mut drivers = String::new();
    let mut key = 1;
    for letter in LETTERS {
        for d in SETUP_DRIVERS {
            drivers.push_str(&format!(
                "\n        <PathAndCredentials wcm:action=\"add\" wcm:keyValue=\"{key}\"><Path>{letter}:\\{d}\\w11\\amd64</Path></PathAndCredentials>"
            ));
            key += 1;
        }
    }
    let product_key = match &spec.product_key {
        Some(k) => format!("<ProductKey><Key>{}</Key><WillShowUI>OnError</WillShowUI></ProductKey>", esc(k)),
        None => "<ProductKey><WillShowUI>Never</WillShowUI></ProductKey>".to_owned(),
    };
    let letters: String = LETTERS.iter().map(|l| format!("{l} ")).collect();
    let user = esc(&spec.user);
    let password = password_value(&spec.password, "Password");
    Ok(format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<!-- Written by kvmctl (profile windows-11). Holds the account's password, encoded as answer files do (not encrypted). -->
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
  <settings pass="windowsPE">
    <component name="Microsoft-Windows-International-Core-WinPE" {COMPONENT}>
      <SetupUILanguage><UILanguage>{locale}</UILanguage></SetupUILanguage>
      {locales}
    </component>
    <component name="Microsoft-Windows-PnpCustomizationsWinPE" {COMPONENT}>
      <DriverPaths>{drivers}
      </DriverPaths>
    </component>
    <component name="Microsoft-Windows-Setup" {COMPONENT}>
      <DiskConfiguration>
        <Disk wcm:action="add">
          <DiskID>0</DiskID>
          <WillWipeDisk>true</WillWipeDisk>
          <CreatePartitions>
            <CreatePartition wcm:action="add"><Order>1</Order><Type>EFI</Type><Size>260</Size></CreatePartition>
            <CreatePartition wcm:action="add"><Order>2</Order><Type>MSR</Type><Size>16</Size></CreatePartition>
            <CreatePartition wcm:action="add"><Order>3</Order><Type>Primary</Type><Extend>true</Extend></CreatePartition>
          </CreatePartitions>
          <ModifyPartitions>
            <ModifyPartition wcm:action="add"><Order>1</Order><PartitionID>1</PartitionID><Label>System</Label><Format>FAT32</Format></ModifyPartition>
            <ModifyPartition wcm:action="add"><Order>2</Order><PartitionID>2</PartitionID></ModifyPartition>
            <ModifyPartition wcm:action="add"><Order>3</Order><PartitionID>3</PartitionID><Label>Windows</Label><Letter>C</Letter><Format>NTFS</Format></ModifyPartition>
          </ModifyPartitions>
        </Disk>
      </DiskConfiguration>
      <ImageInstall>
        <OSImage>
          <InstallFrom><MetaData wcm:action="add"><Key>/IMAGE/NAME</Key><Value>{edition}</Value></MetaData></InstallFrom>
          <InstallTo><DiskID>0</DiskID><PartitionID>3</PartitionID></InstallTo>
        </OSImage>
      </ImageInstall>
      <UserData>
        <AcceptEula>true</AcceptEula>
        {product_key}
      </UserData>
    </component>
  </settings>
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" {COMPONENT}>
      <ComputerName>{computer}</ComputerName>
      <TimeZone>{time_zone}</TimeZone>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-International-Core" {COMPONENT}>
      {locales}
    </component>
    <component name="Microsoft-Windows-Shell-Setup" {COMPONENT}>
      <OOBE>
        <HideEULAPage>true</HideEULAPage>
        <HideOEMRegistrationScreen>true</HideOEMRegistrationScreen>
        <HideOnlineAccountScreens>true</HideOnlineAccountScreens>
        <HideWirelessSetupInOOBE>true</HideWirelessSetupInOOBE>
        <ProtectYourPC>3</ProtectYourPC>
      </OOBE>
      <UserAccounts>
        <LocalAccounts>
          <LocalAccount wcm:action="add">
            <Name>{user}</Name>
            <Group>Administrators</Group>
            <Password><Value>{password}</Value><PlainText>false</PlainText></Password>
          </LocalAccount>
        </LocalAccounts>
      </UserAccounts>
      <AutoLogon>
        <Enabled>true</Enabled>
        <LogonCount>1</LogonCount>
        <Username>{user}</Username>
        <Password><Value>{password}</Value><PlainText>false</PlainText></Password>
      </AutoLogon>
      <FirstLogonCommands>
        <SynchronousCommand wcm:action="add">
          <Order>1</Order>
          <CommandLine>cmd /c for %d in ({letters}) do if exist %d:\{SETUP_SCRIPT} call %d:\{SETUP_SCRIPT}</CommandLine>
          <Description>kvmctl: virtio drivers and the QEMU guest agent</Description>
        </SynchronousCommand>
      </FirstLogonCommands>
    </component>
  </settings>
</unattend>
"#,
        edition = esc(&spec.edition),
        computer = esc(&spec.computer_name),
        time_zone = esc(&spec.time_zone),
        letters = letters.trim_end(),
    ))
}

/// The first-logon script: the virtio-win guest tools (every driver, and the QEMU guest
/// agent) from whichever drive holds them, quietly.
pub fn setup_script() -> String {
    let letters: String = LETTERS.iter().map(|l| format!("{l} ")).collect();
    format!(
        "@echo off\r\n\
         rem Written by kvmctl: installs the virtio-win guest tools and the QEMU guest agent.\r\n\
         for %%d in ({}) do (\r\n\
         \x20 if exist %%d:\\virtio-win-gt-x64.msi msiexec /i %%d:\\virtio-win-gt-x64.msi /qn /norestart\r\n\
         \x20 if exist %%d:\\guest-agent\\qemu-ga-x86_64.msi msiexec /i %%d:\\guest-agent\\qemu-ga-x86_64.msi /qn /norestart\r\n\
         )\r\n",
        letters.trim_end()
    )
}

/// The answer file's ISO: `autounattend.xml` and the first-logon script.
pub fn unattend_iso(spec: &UnattendSpec) -> Result<Vec<u8>, UnattendError> {
    let xml = autounattend_xml(spec)?;
    let script = setup_script();
    crate::iso::build(LABEL, &[("autounattend.xml", xml.as_bytes()), (SETUP_SCRIPT, script.as_bytes())])
        .map_err(|e| err("unattend", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnattendSpec {
        UnattendSpec {
            computer_name: "win-1".into(),
            user: "alice".into(),
            password: "correct horse 1".into(),
            locale: "en-US".into(),
            time_zone: "UTC".into(),
            edition: "Windows 11 Pro".into(),
            product_key: None,
        }
    }

    #[test]
    fn the_answer_file_is_well_formed_and_says_what_was_asked() {
        let xml = autounattend_xml(&spec()).unwrap();
        let doc = roxmltree_lite(&xml);
        assert!(doc.contains("<ComputerName>win-1</ComputerName>") && doc.contains("<Name>alice</Name>"));
        assert!(xml.contains("<Value>Windows 11 Pro</Value>") && xml.contains("D:\\viostor\\w11\\amd64"));
        // The password is encoded as Windows Setup expects, never in plain text.
        assert!(!xml.contains("correct horse"));
        let enc = password_value("correct horse 1", "Password");
        let raw = base64::engine::general_purpose::STANDARD.decode(&enc).unwrap();
        let back: Vec<u16> = raw.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16(&back).unwrap(), "correct horse 1Password");
        assert!(xml.contains(&enc));
    }

    /// A check that the document is XML a parser accepts: quick-xml is not a dependency of
    /// this crate, so the test walks tags by hand and checks they nest.
    fn roxmltree_lite(xml: &str) -> String {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').unwrap() + i;
            let tag = &rest[i + 1..end];
            if !(tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/')) {
                let name = tag.trim_start_matches('/').split_whitespace().next().unwrap().to_owned();
                if tag.starts_with('/') {
                    assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "tags nest");
                } else {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "every tag closed: {stack:?}");
        xml.to_owned()
    }

    #[test]
    fn values_are_validated_and_escaped() {
        for (change, field) in [
            (UnattendSpec { computer_name: "a-name-longer-than-15".into(), ..spec() }, "name"),
            (UnattendSpec { computer_name: "12345".into(), ..spec() }, "name"),
            (UnattendSpec { user: "Administrator".into(), ..spec() }, "user"),
            (UnattendSpec { user: "a<b>".into(), ..spec() }, "user"),
            (UnattendSpec { password: "short".into(), ..spec() }, "password"),
            (UnattendSpec { password: "new\nline-password".into(), ..spec() }, "password"),
            (UnattendSpec { locale: "english".into(), ..spec() }, "locale"),
            (UnattendSpec { time_zone: "UTC</TimeZone><x>".into(), ..spec() }, "time_zone"),
            (UnattendSpec { edition: "Pro</Value>".into(), ..spec() }, "edition"),
            (UnattendSpec { product_key: Some("ABCDE".into()), ..spec() }, "product_key"),
        ] {
            assert_eq!(autounattend_xml(&change).unwrap_err().field, field, "{change:?}");
        }
        // Characters a password may hold come out escaped (and encoded).
        let xml = autounattend_xml(&UnattendSpec { user: "o'neil & co".into(), ..spec() }).unwrap();
        assert!(xml.contains("<Name>o&apos;neil &amp; co</Name>"), "{xml}");
    }

    #[test]
    fn the_iso_holds_both_files() {
        let iso = unattend_iso(&spec()).unwrap();
        assert_eq!(&iso[0x8001..0x8006], b"CD001");
        let text = String::from_utf8_lossy(&iso);
        assert!(text.contains("<ComputerName>win-1</ComputerName>") && text.contains("qemu-ga-x86_64.msi"));
    }
}
