//! `kvmctl user|token|quota|audit ...` and plan management: clients of `/v1/users`,
//! `/v1/tokens`, `/v1/users/{name}/quota`, `/v1/audit`, `/v1/plans`.

use crate::output::{self, OutputFormat, Table};
use kvmctl_client::Client;
use kvmctl_types::api::{
    AuditEntry, PasswordSetRequest, Plan, PlanCreateRequest, PlanUpdateRequest, Quota, QuotaSetRequest, Token, TokenCreateRequest,
    TokenCreated, UsageRecord, User, UserCreateRequest, UserUpdateRequest,
};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (admins). Give them a token with `kvmctl token create --user NAME`.
    Create {
        name: String,
        /// user or admin.
        #[arg(long, default_value = "user")]
        role: String,
        /// Refuse custom sizes: the user's VMs come from plans only.
        #[arg(long)]
        plans_only: bool,
    },
    /// List users (admins).
    List,
    /// Show a user (admins, or yourself).
    Show { name: String },
    /// Disable a user: their tokens stop working at once (admins).
    Disable { name: String },
    /// Enable a disabled user (admins).
    Enable { name: String },
    /// Set a password for the web console: another user's first one (admins; they choose
    /// their own at the next login, and their sessions end), or your own. The password is
    /// read from the terminal without echo, or as the first line of stdin with
    /// --password-stdin.
    Passwd {
        name: String,
        /// Read the new password (and, for your own, the current one on the second line)
        /// from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Who am I to the daemon.
    Whoami,
    /// SSH public keys saved in a user's profile (the web console's create form offers them).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Save a public key (one OpenSSH line, like ~/.ssh/id_ed25519.pub) in USER's profile.
    Add {
        user: String,
        /// The public key file (`-` for stdin).
        file: std::path::PathBuf,
        /// A label [default: the key's comment, or `key`].
        #[arg(long)]
        label: Option<String>,
    },
    /// List the keys saved in USER's profile.
    List { user: String },
    /// Remove a saved key (VMs made with it keep it).
    Rm { user: String, id: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token, printed once: the daemon keeps only its hash.
    Create {
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Expire after this many days (1 to 3650) [default: never].
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        /// For another user (admins).
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens (never their secrets): yours, or with --user someone's (admins see all).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// A user's limits and what they use.
    Show { user: String },
    /// Set a user's limits (admins); --reset FIELD puts one back to the default.
    Set {
        user: String,
        #[arg(long)]
        vms: Option<u64>,
        #[arg(long)]
        vcpus: Option<u64>,
        /// Memory in MiB.
        #[arg(long, value_name = "MIB")]
        memory: Option<u64>,
        /// Disk in GiB.
        #[arg(long, value_name = "GIB")]
        disk: Option<u64>,
        #[arg(long)]
        forwards: Option<u64>,
        /// vms, vcpus, memory_mib, disk_gib or forwards; repeat for more.
        #[arg(long, value_name = "FIELD")]
        reset: Vec<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// State-changing requests, newest first (admins).
    List {
        #[arg(long)]
        user: Option<String>,
        /// Only requests at or after this time: unix seconds, or an age such as 1h, 2d, 30m.
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `kvmctl usage`: hourly usage records.
#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Only this user's records (admins; users see their own).
    #[arg(long)]
    user: Option<String>,
    /// Hours starting at or after: 2026-11-01, 2026-11-01T06:00:00Z, unix seconds, or an
    /// age such as 24h, 7d [default: all].
    #[arg(long, value_parser = parse_since)]
    from: Option<i64>,
    /// Hours starting before (same forms as --from) [default: now].
    #[arg(long, value_parser = parse_since)]
    to: Option<i64>,
}

pub async fn run_usage(client: &Client, args: UsageArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    output::print(&client.usage_list(args.user.as_deref(), args.from, args.to).await?, format)?;
    Ok(ExitCode::SUCCESS)
}

impl Table for Vec<UsageRecord> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows =
            vec![["hour", "vm", "owner", "node", "state", "vcpus", "memory_mib", "disk_gib", "plan", "price_hourly", "cost", "currency"]
                .map(String::from)
                .to_vec()];
        rows.extend(self.iter().map(|u| {
            vec![
                u.hour_utc.clone(),
                u.vm.clone(),
                u.owner.clone(),
                u.node.clone(),
                u.state.clone(),
                u.vcpus.to_string(),
                u.memory_mib.to_string(),
                u.disk_gib.to_string(),
                u.plan.clone().unwrap_or_else(|| "-".into()),
                u.price_hourly.clone(),
                u.cost.clone(),
                u.currency.clone(),
            ]
        }));
        rows
    }
}

/// A duration such as 90s, 30m, 2h or 7d, in seconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    kvmctl_types::parse_duration(s)
}

/// Unix seconds, a UTC date or time, or an age back from now.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Some(t) = kvmctl_core::metering::parse_utc(s) {
        return Ok(t);
    }
    let secs = parse_duration(s)
        .map_err(|_| format!("{s:?} is neither unix seconds, a UTC date (2026-11-01[T06:00:00Z]) nor an age such as 30m, 2h, 7d"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(now - secs)
}

fn when(t: i64) -> String {
    humantime_utc(t)
}

/// `2026-11-22T14:03:00Z` from unix seconds.
pub(crate) fn humantime_utc(t: i64) -> String {
    kvmctl_core::metering::utc(t)
}

impl Table for Vec<User> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "role", "state", "sizing"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|u| {
            vec![
                u.name.clone(),
                u.role.clone(),
                if u.disabled { "disabled" } else { "active" }.into(),
                if u.custom_sizing { "custom" } else { "plans only" }.into(),
            ]
        }));
        rows
    }
}

impl Table for User {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["name:".into(), self.name.clone()],
            vec!["role:".into(), self.role.clone()],
            vec!["state:".into(), if self.disabled { "disabled" } else { "active" }.into()],
            vec!["sizing:".into(), if self.custom_sizing { "plans or custom sizes" } else { "plans only" }.into()],
        ]
    }
}

impl Table for Vec<kvmctl_types::api::SshKey> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["id", "label", "fingerprint", "added"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|k| vec![k.id.clone(), k.name.clone(), k.fingerprint.clone(), when(k.created_at)]));
        rows
    }
}

impl Table for Vec<Token> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["id", "user", "state", "expires", "last used", "description"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|t| {
            vec![
                t.id.clone(),
                t.user.clone(),
                t.state.clone(),
                t.expires_at.map(when).unwrap_or_else(|| "never".into()),
                t.last_used_at.map(when).unwrap_or_else(|| "-".into()),
                t.description.clone(),
            ]
        }));
        rows
    }
}

impl Table for TokenCreated {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["token:".into(), self.token.clone()],
            vec!["id:".into(), self.info.id.clone()],
            vec!["user:".into(), self.info.user.clone()],
            vec!["expires:".into(), self.info.expires_at.map(when).unwrap_or_else(|| "never".into())],
        ]
    }
}

impl Table for Quota {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["resource", "used", "limit"].map(String::from).to_vec()];
        let lim = |v: Option<u64>, key: &str| match v {
            None => "unlimited".to_string(),
            Some(v) if self.overridden.iter().any(|o| o == key) => format!("{v} (set)"),
            Some(v) => v.to_string(),
        };
        rows.push(vec!["vms".into(), self.used_vms.to_string(), lim(self.max_vms, "vms")]);
        rows.push(vec!["vcpus".into(), self.used_vcpus.to_string(), lim(self.max_vcpus, "vcpus")]);
        rows.push(vec!["memory_mib".into(), self.used_memory_mib.to_string(), lim(self.max_memory_mib, "memory_mib")]);
        rows.push(vec!["disk_gib".into(), self.used_disk_gib.to_string(), lim(self.max_disk_gib, "disk_gib")]);
        rows.push(vec!["forwards".into(), self.used_forwards.to_string(), lim(self.max_forwards, "forwards")]);
        rows
    }
}

impl Table for Vec<AuditEntry> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["time", "user", "request", "status", "outcome", "request id"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|a| {
            vec![
                when(a.at),
                a.user.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", a.method, a.path),
                a.status.to_string(),
                a.outcome.clone(),
                a.request_id.clone(),
            ]
        }));
        rows
    }
}

impl Table for Plan {
    fn rows(&self) -> Vec<Vec<String>> {
        vec![self.clone()].rows()
    }
}

pub async fn run_user(client: &Client, cmd: UserCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Create { name, role, plans_only } => {
            let req = UserCreateRequest { name, role: Some(role), custom_sizing: Some(!plans_only) };
            output::print(&client.user_create(&req).await?, format)?;
        }
        UserCommand::List => output::print(&client.user_list().await?, format)?,
        UserCommand::Show { name } => output::print(&client.user_get(&name).await?, format)?,
        UserCommand::Disable { name } => {
            output::print(&client.user_update(&name, &UserUpdateRequest { disabled: Some(true), ..Default::default() }).await?, format)?
        }
        UserCommand::Enable { name } => {
            output::print(&client.user_update(&name, &UserUpdateRequest { disabled: Some(false), ..Default::default() }).await?, format)?
        }
        UserCommand::Whoami => output::print(&client.whoami().await?, format)?,
        UserCommand::Key(KeyCommand::List { user }) => output::print(&client.ssh_key_list(&user).await?, format)?,
        UserCommand::Key(KeyCommand::Rm { user, id }) => {
            client.ssh_key_delete(&user, &id).await?;
            eprintln!("key {id} removed from {user}'s profile");
        }
        UserCommand::Key(KeyCommand::Add { user, file, label }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            let line = text.trim().to_owned();
            let label = label.unwrap_or_else(|| {
                let comment = line.split_whitespace().nth(2).unwrap_or("key");
                comment.chars().filter(|c| c.is_alphanumeric() || " ._@-".contains(*c)).take(64).collect::<String>()
            });
            let label = if label.is_empty() { "key".to_owned() } else { label };
            let key = client.ssh_key_add(&user, &kvmctl_types::api::SshKeyCreateRequest { name: label, public_key: line }).await?;
            output::print(&vec![key], format)?;
        }
        UserCommand::Passwd { name, password_stdin } => {
            let own = client.whoami().await?.name == name;
            let (password, current) = if password_stdin {
                let mut lines = std::io::stdin().lines();
                let mut next = || lines.next().transpose().map(|l| l.unwrap_or_default());
                let password = next()?;
                let current = if own { Some(next()?).filter(|c| !c.is_empty()) } else { None };
                (password, current)
            } else {
                let current = if own { Some(read_secret("current password: ")?).filter(|c| !c.is_empty()) } else { None };
                let password = read_secret("new password: ")?;
                if read_secret("new password again: ")? != password {
                    anyhow::bail!("the two new passwords differ; nothing was changed");
                }
                (password, current)
            };
            client.password_set(&name, &PasswordSetRequest { password, current }).await?;
            if own {
                eprintln!("your password is changed; your web console sessions have ended");
            } else {
                eprintln!("password of {name} set; they choose their own at their next login to the web console");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line from the terminal, not echoed.
fn read_secret(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("stdin is not a terminal: pass --password-stdin and write the password to stdin");
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    // SAFETY: termios of fd 0, which is a terminal; restored below.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::tcgetattr(0, &mut saved) } == 0;
    if got {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if got {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub async fn run_token(client: &Client, cmd: TokenCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { description, expires_in_days, user } => {
            let made = client.token_create(&TokenCreateRequest { description, expires_in_days, user }).await?;
            output::print(&made, format)?;
            if format == OutputFormat::Table {
                eprintln!("Store the token now: it is not shown again. Use it as KVMCTL_TOKEN=... or --token.");
            }
        }
        TokenCommand::List { user } => output::print(&client.token_list(user.as_deref()).await?, format)?,
        TokenCommand::Revoke { id } => {
            client.token_revoke(&id).await?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_quota(client: &Client, cmd: QuotaCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        QuotaCommand::Show { user } => output::print(&client.quota_get(&user).await?, format)?,
        QuotaCommand::Set { user, vms, vcpus, memory, disk, forwards, reset } => {
            let req = QuotaSetRequest {
                max_vms: vms,
                max_vcpus: vcpus,
                max_memory_mib: memory,
                max_disk_gib: disk,
                max_forwards: forwards,
                reset,
            };
            output::print(&client.quota_set(&user, &req).await?, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_audit(client: &Client, cmd: AuditCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List { user, since, limit } => output::print(&client.audit_list(user.as_deref(), since, Some(limit)).await?, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn plan_create(client: &Client, req: PlanCreateRequest, format: OutputFormat) -> anyhow::Result<()> {
    output::print(&client.plan_create(&req).await?, format)?;
    Ok(())
}

pub async fn plan_update(client: &Client, name: &str, req: PlanUpdateRequest, format: OutputFormat) -> anyhow::Result<()> {
    output::print(&client.plan_update(name, &req).await?, format)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_ages() {
        assert_eq!(super::parse_duration("90s"), Ok(90));
        assert_eq!(super::parse_duration("2h"), Ok(7200));
        assert_eq!(super::parse_duration("7d"), Ok(604_800));
        assert!(super::parse_duration("-2h").unwrap_err().contains("negative"));
        assert!(super::parse_duration("2w").unwrap_err().contains("s, m, h or d"));
        assert!(super::parse_duration("h").is_err());
        assert!(super::parse_duration("99999999999999999d").unwrap_err().contains("too long"));
        assert_eq!(super::humantime_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::humantime_utc(1_795_355_459), "2026-11-22T13:50:59Z");
        assert!(super::parse_since("2h").unwrap() > 1_700_000_000);
        assert_eq!(super::parse_since("1700000000").unwrap(), 1_700_000_000);
        assert!(super::parse_since("2w").is_err());
    }
}
