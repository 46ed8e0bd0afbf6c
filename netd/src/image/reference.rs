//! Image references (`name[:tag]`, normalised as the docker client does:
//! `docker.io/library/busybox` = `busybox` = `busybox:latest`) and the
//! Dockerfile instructions `--change` accepts on import.

use std::fmt;

use super::{ImageConfig, ImageError};

/// A normalised `name:tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

impl Reference {
    /// Parses and normalises a reference; digests (`@sha256:`) are refused.
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.is_empty() || s.len() > 255 {
            return Err(format!("{s:?}: a reference is 1 to 255 characters"));
        }
        if s.contains('@') {
            return Err(format!("{s:?}: digest references are not supported"));
        }
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (s, "latest"),
        };
        let name = name.strip_prefix("docker.io/").unwrap_or(name);
        let name = name.strip_prefix("library/").unwrap_or(name);
        let name_ok = !name.is_empty()
            && name.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':'))
                    && c.as_bytes()[0].is_ascii_alphanumeric()
            });
        if !name_ok {
            return Err(format!("{s:?}: repository names are lowercase [a-z0-9._-] separated by /"));
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && tag.as_bytes()[0] != b'.'
            && tag.as_bytes()[0] != b'-';
        if !tag_ok {
            return Err(format!("{s:?}: tags are 1 to 128 of [A-Za-z0-9_.-], not starting with . or -"));
        }
        Ok(Reference { name: name.to_owned(), tag: tag.to_owned() })
    }
}

fn words(rest: &str) -> Result<Vec<String>, ImageError> {
    let rest = rest.trim();
    if rest.starts_with('[') {
        serde_json::from_str(rest).map_err(|e| ImageError::BadChange(format!("{rest:?}: bad JSON array: {e}")))
    } else if rest.is_empty() {
        Ok(Vec::new())
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
    }
}

/// Applies one `--change` instruction (CMD, ENTRYPOINT, ENV, WORKDIR, EXPOSE,
/// USER, LABEL) to `config`.
pub fn parse_change(change: &str, config: &mut ImageConfig) -> Result<(), ImageError> {
    let change = change.trim();
    let (instr, rest) = change.split_once(char::is_whitespace).unwrap_or((change, ""));
    let rest = rest.trim();
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => config.cmd = words(rest)?,
        "ENTRYPOINT" => config.entrypoint = words(rest)?,
        "ENV" => {
            let (k, v) = rest
                .split_once('=')
                .or_else(|| rest.split_once(' '))
                .ok_or_else(|| ImageError::BadChange(format!("{change:?}: ENV needs KEY=VALUE")))?;
            let k = k.trim();
            config.env.retain(|e| !e.starts_with(&format!("{k}=")));
            config.env.push(format!("{k}={}", v.trim()));
        }
        "WORKDIR" if rest.starts_with('/') => config.working_dir = rest.to_owned(),
        "WORKDIR" => return Err(ImageError::BadChange(format!("{change:?}: WORKDIR needs an absolute path"))),
        "USER" if !rest.is_empty() => config.user = rest.to_owned(),
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if port.parse::<u16>().map_or(true, |n| n == 0) || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(ImageError::BadChange(format!("{change:?}: bad port {p:?}")));
                }
                config.exposed_ports.push(format!("{port}/{proto}"));
            }
        }
        "LABEL" => {
            let (k, v) = rest
                .split_once('=')
                .ok_or_else(|| ImageError::BadChange(format!("{change:?}: LABEL needs KEY=VALUE")))?;
            config.labels.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
        }
        _ => {
            return Err(ImageError::BadChange(format!(
                "{change:?}: supported instructions are CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        for s in ["busybox", "busybox:latest", "docker.io/library/busybox", "library/busybox:latest"] {
            assert_eq!(Reference::parse(s).unwrap().to_string(), "busybox:latest", "{s}");
        }
        assert_eq!(Reference::parse("my/app:1.2").unwrap().to_string(), "my/app:1.2");
        assert_eq!(Reference::parse("localhost:5000/app").unwrap().to_string(), "localhost:5000/app:latest");
        for bad in ["", "Upper", "a b", "x:", "x:-t", "a@sha256:00", "/x", "x//y", &"a".repeat(300)] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_apply() {
        let mut c = ImageConfig::default();
        parse_change("CMD [\"echo\", \"hi\"]", &mut c).unwrap();
        parse_change("ENTRYPOINT /bin/run", &mut c).unwrap();
        parse_change("ENV A=1", &mut c).unwrap();
        parse_change("ENV A=2", &mut c).unwrap();
        parse_change("WORKDIR /srv", &mut c).unwrap();
        parse_change("EXPOSE 80 53/udp", &mut c).unwrap();
        parse_change("LABEL team=\"net\"", &mut c).unwrap();
        assert_eq!(c.cmd, ["echo", "hi"]);
        assert_eq!(c.entrypoint, ["/bin/sh", "-c", "/bin/run"]);
        assert_eq!(c.env, ["A=2"]);
        assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
        assert_eq!(c.labels["team"], "net");
        for bad in ["RUN make", "WORKDIR rel", "EXPOSE 0", "EXPOSE 80/xyz", "CMD [broken", "ENV", "LABEL x"] {
            assert!(parse_change(bad, &mut c).is_err(), "{bad}");
        }
    }
}
