//! `-o table|json|yaml|csv` for every list and show command.
//!
//! JSON and YAML print the API's own response types, so scripts see exactly what the API
//! returns; tables are for people and may change; CSV is the table's rows (RFC 4180
//! quoting), for spreadsheets (`kvmctl usage -o csv`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
    Csv,
}

/// A response that can also be shown as a table.
pub trait Table {
    /// Rows of the table; the first is the header when `header()` is true.
    fn rows(&self) -> Vec<Vec<String>>;
    fn header(&self) -> bool {
        true
    }
}

/// Prints `value` on stdout. A reader that went away (`kvmctl vm list | head -1`, a pipe into
/// a program that is missing) ends the command quietly, as it does for other Unix tools,
/// instead of a panic.
pub fn print<T: Serialize + Table>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    use std::io::Write;
    let text = render(value, format)?;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

/// Prints what `fetch` returns; with `watch`, again every 2 seconds on a cleared screen
/// (a terminal) until interrupted. JSON and YAML print one document per round.
pub async fn watch<T, F, Fut, E>(watch: bool, format: OutputFormat, fetch: F) -> anyhow::Result<()>
where
    T: Serialize + Table,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    use std::io::IsTerminal;
    loop {
        let value = fetch().await.map_err(Into::into)?;
        if !watch {
            return print(&value, format);
        }
        if format == OutputFormat::Table && std::io::stdout().is_terminal() {
            // Home and clear, then the new table: no scrolling history of old ones.
            print!("\x1b[H\x1b[2J");
            println!("every 2s: {}\n", chrono_now());
        }
        print(&value, format)?;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

fn chrono_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (h, m, s) = ((now / 3600) % 24, (now / 60) % 60, now % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

pub fn render<T: Serialize + Table>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(value)?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_yaml::to_string(value)?,
        OutputFormat::Table => table(&value.rows(), value.header()),
        OutputFormat::Csv => csv(&value.rows()),
    })
}

/// Rows as CSV: fields with a comma, quote or line break are quoted, quotes doubled.
pub fn csv(rows: &[Vec<String>]) -> String {
    let field = |f: &str| {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_owned()
        }
    };
    rows.iter().map(|r| r.iter().map(|f| field(f)).collect::<Vec<_>>().join(",") + "\r\n").collect()
}

/// Left-aligned columns separated by two spaces; a header row is upper-cased.
pub fn table(rows: &[Vec<String>], header: bool) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let cell = if header && i == 0 { cell.to_uppercase() } else { cell.clone() };
            if c + 1 == row.len() {
                line.push_str(&cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn age(created_at: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let s = (now - created_at).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct T {
        a: u32,
    }
    impl Table for T {
        fn rows(&self) -> Vec<Vec<String>> {
            vec![vec!["name".into(), "value".into()], vec!["a-long-name".into(), self.a.to_string()]]
        }
    }

    #[test]
    fn formats() {
        let t = T { a: 7 };
        assert_eq!(render(&t, OutputFormat::Table).unwrap(), "NAME         VALUE\na-long-name  7\n");
        assert_eq!(render(&t, OutputFormat::Json).unwrap(), "{\n  \"a\": 7\n}\n");
        assert_eq!(render(&t, OutputFormat::Yaml).unwrap(), "a: 7\n");
        assert_eq!(render(&t, OutputFormat::Csv).unwrap(), "name,value\r\na-long-name,7\r\n");
        let odd = vec![vec!["a,b".to_owned(), "say \"hi\"".to_owned(), "x\ny".to_owned()]];
        assert_eq!(csv(&odd), "\"a,b\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }
}
