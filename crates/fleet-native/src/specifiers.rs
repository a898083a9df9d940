//! systemd's specifiers in unit files (`systemd.unit(5)`, "Specifiers"), resolved before a
//! command line is split: `%n`, `%i`, `%H`, ... An unknown one is an error, as in systemd
//! (unlike fleet's `[X-Fleet]` substitution, where unknown ones stay as they are).

use std::fmt;

use fleet_unit::NameInfo;

/// What specifiers resolve to for one unit on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecifierContext {
    pub unit_name: String,
    pub machine_id: String,
    pub boot_id: String,
    pub hostname: String,
    /// The user the service runs as (`User=`, or the supervisor's own user).
    pub user: UserInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecifierError {
    Unknown(char),
    Dangling,
}

impl fmt::Display for SpecifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecifierError::Unknown(c) => write!(f, "unknown specifier %{c}"),
            SpecifierError::Dangling => {
                f.write_str("a lone % at the end (write %% for a percent sign)")
            }
        }
    }
}

impl std::error::Error for SpecifierError {}

/// Replaces every specifier in `text`.
pub fn resolve(text: &str, context: &SpecifierContext) -> Result<String, SpecifierError> {
    let (name, prefix, instance) = NameInfo::parse(&context.unit_name)
        .map_or(("", "", ""), |i| (i.name, i.prefix, i.instance));
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let specifier = chars.next().ok_or(SpecifierError::Dangling)?;
        let value = match specifier {
            '%' => "%".to_owned(),
            'n' => context.unit_name.clone(),
            'N' => name.to_owned(),
            'p' => prefix.to_owned(),
            'P' => unescape(prefix),
            'i' => instance.to_owned(),
            'I' => unescape(instance),
            'j' => last_component(prefix),
            'J' => unescape(&last_component(prefix)),
            'f' => {
                let source = if instance.is_empty() {
                    prefix
                } else {
                    instance
                };
                let unescaped = unescape(source);
                if unescaped.starts_with('/') {
                    unescaped
                } else {
                    format!("/{unescaped}")
                }
            }
            'H' => context.hostname.clone(),
            'l' => context.hostname.split('.').next().unwrap_or("").to_owned(),
            'm' => context.machine_id.clone(),
            'b' => context.boot_id.clone(),
            'u' => context.user.name.clone(),
            'U' => context.user.uid.to_string(),
            'h' => context.user.home.clone(),
            's' => context.user.shell.clone(),
            't' => "/run".to_owned(),
            'S' => "/var/lib".to_owned(),
            'C' => "/var/cache".to_owned(),
            'L' => "/var/log".to_owned(),
            'E' => "/etc".to_owned(),
            'T' => "/tmp".to_owned(),
            'V' => "/var/tmp".to_owned(),
            other => return Err(SpecifierError::Unknown(other)),
        };
        out.push_str(&value);
    }
    Ok(out)
}

/// The part after the last `-` (`%j`).
fn last_component(prefix: &str) -> String {
    prefix.rsplit('-').next().unwrap_or(prefix).to_owned()
}

/// systemd-escape's reverse: `-` is `/`, `\xNN` a byte.
pub fn unescape(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let raw = text.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'-' => bytes.push(b'/'),
            b'\\' if raw.get(i + 1) == Some(&b'x') => {
                let hex = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        bytes.push(byte);
                        i += 3;
                    }
                    None => bytes.push(b'\\'),
                }
            }
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unit: &str, text: &str, expected: Result<&str, SpecifierError>) {
        let context = SpecifierContext {
            unit_name: unit.to_owned(),
            machine_id: "0123abcd".into(),
            boot_id: "b00t".into(),
            hostname: "node1.example.com".into(),
            user: UserInfo {
                name: "app".into(),
                uid: 1000,
                home: "/home/app".into(),
                shell: "/bin/sh".into(),
            },
        };
        assert_eq!(
            resolve(text, &context),
            expected.map(str::to_owned),
            "{unit} {text}"
        );
    }

    #[test]
    fn specifiers() {
        let rows: &[(&str, &str, Result<&str, SpecifierError>)] = &[
            (
                "web@8080.service",
                "%n %N %p %i",
                Ok("web@8080.service web@8080 web 8080"),
            ),
            ("web.service", "%p|%i|%N", Ok("web||web")),
            (
                "mnt@var-lib-data.service",
                "%I %f",
                Ok("var/lib/data /var/lib/data"),
            ),
            ("a-b-c@x\\x2dy.service", "%j %I %P", Ok("c x-y a/b/c")),
            (
                "x.service",
                "%H %l %m %b",
                Ok("node1.example.com node1 0123abcd b00t"),
            ),
            ("x.service", "%u %U %h %s", Ok("app 1000 /home/app /bin/sh")),
            ("x.service", "100%% %t", Ok("100% /run")),
            ("x.service", "%z", Err(SpecifierError::Unknown('z'))),
            ("x.service", "50%", Err(SpecifierError::Dangling)),
            (
                "x.service",
                "no specifiers: ${HOME} $X",
                Ok("no specifiers: ${HOME} $X"),
            ),
        ];
        for (unit, text, expected) in rows {
            check(unit, text, expected.clone());
        }
    }
}
