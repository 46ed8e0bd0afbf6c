use super::spec::*;

fn create(json: &str) -> Result<ContainerSpec, SpecError> {
    ContainerSpec::from_api(serde_json::from_str(json).unwrap())
}

#[test]
fn a_typical_docker_run_body_validates() {
    let s = create(
        r#"{"Image":"busybox","Cmd":["sh","-c","echo hi"],"Env":["A=1"],"WorkingDir":"/tmp","Hostname":"web1",
            "Labels":{"k":"v"},"StopSignal":"SIGINT","StopTimeout":3,
            "HostConfig":{"Binds":["/srv/data:/data:ro","vol1:/v","/anon"],"NetworkMode":"none",
              "Mounts":[{"Type":"tmpfs","Target":"/run/t","TmpfsOptions":{"SizeBytes":1048576}}],
              "Memory":67108864,"NanoCpus":500000000,"PidsLimit":64,
              "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}}"#,
    )
    .unwrap();
    assert_eq!(s.cmd, ["sh", "-c", "echo hi"]);
    assert_eq!(s.stop_signal, 2);
    assert_eq!(s.stop_timeout, 3);
    assert_eq!(s.mounts.len(), 4);
    assert_eq!((s.mounts[0].kind.clone(), s.mounts[0].read_only), (MountKind::Bind, true));
    assert_eq!(s.mounts[1].kind, MountKind::Volume);
    assert_eq!((s.mounts[2].kind.clone(), s.mounts[2].source.as_str()), (MountKind::Volume, ""));
    assert_eq!((s.mounts[3].kind.clone(), s.mounts[3].tmpfs_size), (MountKind::Tmpfs, 1 << 20));
    assert_eq!(s.limits, Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(64) });
    assert_eq!(s.restart, RestartPolicy::OnFailure { max_retries: 3 });
    assert_eq!(s.network, NetworkMode::None);
}

#[test]
fn bad_input_names_the_field() {
    let cases = [
        (r#"{"Image":""}"#, "invalid Image"),
        (r#"{"Image":"b","HostConfig":{"Binds":["rel/path:/x"]}}"#, "neither an absolute host path"),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:relative"]}}"#, "must be an absolute path"),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:/x:rx"]}}"#, "unknown mode"),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:/x:ro:z"]}}"#, "expected [source:]target"),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:/"]}}"#, "cannot mount over /"),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:/x/../../etc"]}}"#, "without .."),
        (r#"{"Image":"b","HostConfig":{"Binds":["/a:/x","/b:/x"]}}"#, "duplicate mount point"),
        (r#"{"Image":"b","HostConfig":{"Mounts":[{"Type":"nfs","Target":"/x"}]}}"#, "not supported"),
        (r#"{"Image":"b","HostConfig":{"Mounts":[{"Type":"tmpfs","Source":"x","Target":"/x"}]}}"#, "takes no source"),
        (r#"{"Image":"b","HostConfig":{"Memory":1000}}"#, "minimum memory limit"),
        (r#"{"Image":"b","HostConfig":{"NanoCpus":5}}"#, "minimum is 0.01 CPU"),
        (r#"{"Image":"b","HostConfig":{"PidsLimit":-5}}"#, "invalid PidsLimit"),
        (r#"{"Image":"b","HostConfig":{"NetworkMode":"container:x"}}"#, "not supported yet"),
        (r#"{"Image":"b","HostConfig":{"NetworkMode":"none","PortBindings":{"80/tcp":[]}}}"#, "conflicting options"),
        (r#"{"Image":"b","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"x"}]}}}"#, "invalid host port"),
        (r#"{"Image":"b","ExposedPorts":{"80/icmp":{}}}"#, "not supported"),
        (r#"{"Image":"b","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#, "invalid restart policy"),
        (r#"{"Image":"b","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#, "AutoRemove"),
        (r#"{"Image":"b","StopSignal":"SIGNOPE"}"#, "is not a signal"),
        (r#"{"Image":"b","WorkingDir":"rel"}"#, "not an absolute path"),
        (r#"{"Image":"b","Env":["=x"]}"#, "not KEY=VALUE"),
        (r#"{"Image":"b","Hostname":"a b"}"#, "not a valid host name"),
    ];
    for (json, want) in cases {
        let err = create(json).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
}

#[test]
fn signals_and_names() {
    assert_eq!(parse_signal("KILL").unwrap(), 9);
    assert_eq!(parse_signal("sigterm").unwrap(), 15);
    assert_eq!(parse_signal("10").unwrap(), 10);
    for bad in ["", "0", "65", "SIGFOO", "-1"] {
        assert!(parse_signal(bad).is_err(), "{bad}");
    }
    assert_eq!(check_name("/web").unwrap(), "web");
    assert_eq!(check_name("a").unwrap(), "a");
    for bad in ["", "/", "-x", "a b", "a/b"] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn dns_settings_are_validated_before_they_reach_resolv_conf() {
    let s = create(r#"{"Image":"b","HostConfig":{"Dns":["192.0.2.1","2001:db8::1"],"DnsSearch":["corp"],"DnsOptions":["ndots:2"]}}"#)
        .unwrap();
    assert_eq!(s.dns.len(), 2);
    assert_eq!(
        (s.dns_search.as_slice(), s.dns_options.as_slice()),
        (&["corp".to_owned()][..], &["ndots:2".to_owned()][..])
    );
    for bad in [
        r#"{"Image":"b","HostConfig":{"Dns":["resolver.example"]}}"#,
        r#"{"Image":"b","HostConfig":{"Dns":["0.0.0.0"]}}"#,
        r#"{"Image":"b","HostConfig":{"DnsSearch":["a b"]}}"#,
        r#"{"Image":"b","HostConfig":{"DnsOptions":["ndots:1\nnameserver 6.6.6.6"]}}"#,
    ] {
        let e = create(bad).unwrap_err().to_string();
        assert!(e.contains("Dns"), "{bad}: {e}");
    }
}
