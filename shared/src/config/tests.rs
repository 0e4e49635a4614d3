use super::vars::{self, Function, Rule};
use super::*;
use std::collections::HashMap;

fn valid() -> HashMap<String, String> {
    [
        ("SNOWFLAKE_ACCOUNT", "acme-prod"),
        ("SNOWFLAKE_USER", "replicator"),
        ("SNOWFLAKE_PASSWORD", "hunter2"),
        ("SNOWFLAKE_DATABASE", "ANALYTICS"),
        ("SNOWFLAKE_SCHEMA", "PUBLIC"),
        ("PGHOST", "db.internal"),
        ("PGDATABASE", "countries"),
        ("PGUSER", "replicator"),
        ("PGPASSWORD", "s3cret"),
        (
            "RETRY_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123/retry",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn read(vars: HashMap<String, String>) -> Result<ReplicatorConfig, ConfigError> {
    ReplicatorConfig::from_vars(Env::from_map(vars))
}

#[test]
fn defaults_are_safe_for_the_cloud() {
    let config = read(valid()).expect("valid config");
    assert_eq!(config.postgres.tls, TlsMode::VerifyFull);
    assert_eq!(config.postgres.port, 5432);
    assert_eq!(config.postgres.table.as_str(), "case");
    assert_eq!(config.snowflake.table.as_str(), "case");
    assert_eq!(config.limits.max_rows_per_run, 1_000_000);
    assert!(config.snowflake.endpoint_url.is_none());
}

#[test]
fn every_missing_variable_is_named_at_once() {
    let err = read(HashMap::new()).unwrap_err();
    for var in [
        "SNOWFLAKE_ACCOUNT",
        "SNOWFLAKE_USER",
        "SNOWFLAKE_PASSWORD",
        "SNOWFLAKE_DATABASE",
        "SNOWFLAKE_SCHEMA",
        "PGHOST",
        "PGDATABASE",
        "PGUSER",
        "RETRY_QUEUE_URL",
    ] {
        assert!(err.mentions(var), "{var} not reported in: {err}");
    }
}

#[test]
fn malformed_values_are_rejected_with_their_variable() {
    let cases = [
        ("MAX_ROWS_PER_RUN", "0"),
        ("MAX_ROWS_PER_RUN", "lots"),
        ("BATCH_SIZE", "-5"),
        ("BATCH_SIZE", "1000001"),
        ("MAX_FAILURES_PER_RUN", "1e3"),
        ("PGPORT", "70000"),
        ("PGSSLMODE", "verify_full"),
        ("POSTGRES_TABLE", "case; drop table x"),
        ("SNOWFLAKE_TABLE", "\"case\""),
        ("RETRY_QUEUE_URL", "sqs://queue"),
        ("SNOWFLAKE_ENDPOINT_URL", "localhost:8080"),
        ("PGSSLROOTCERT", "/nonexistent/ca.pem"),
        ("SNOWFLAKE_PAGE_ROWS", "0"),
    ];
    for (var, value) in cases {
        let mut vars = valid();
        vars.insert(var.to_string(), value.to_string());
        let err = read(vars).expect_err(var);
        assert!(err.mentions(var), "{var}={value:?} not reported: {err}");
        assert_eq!(err.problems.len(), 1, "{var}={value:?}: {err}");
    }
}

#[test]
fn two_snowflake_auth_methods_are_refused() {
    let mut vars = valid();
    vars.insert(
        "SNOWFLAKE_PRIVATE_KEY".into(),
        "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----".into(),
    );
    assert!(read(vars).unwrap_err().mentions("SNOWFLAKE_PASSWORD"));
}

#[test]
fn the_tables_file_is_read_and_its_problems_are_the_variables() {
    let dir = std::env::temp_dir().join(format!("countries-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[tables]]\nname = \"orders\"\nsource = { schema = \"S\", table = \"ORDERS\" }\n\
         target = { schema = \"public\", table = \"orders\" }\nconsume = \"delete\"\n",
    )
    .unwrap();
    let mut vars = valid();
    vars.insert("TABLES_FILE".into(), good.display().to_string());
    let config = read(vars).expect("a valid file");
    assert_eq!(config.tables.len(), 1);
    assert_eq!(config.tables[0].name, "orders");
    assert!(read(valid()).unwrap().tables.is_empty(), "unset: case only");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[tables]]\nname = \"Orders\"\nsource = { schema = \"S\", table = \"O\" }\ntarget = { schema = \"public\", table = \"o\" }\n").unwrap();
    let mut vars = valid();
    vars.insert("TABLES_FILE".into(), bad.display().to_string());
    let err = read(vars).unwrap_err().to_string();
    assert!(
        err.contains("TABLES_FILE")
            && err.contains("consume is required")
            && err.contains("lower-case"),
        "{err}"
    );

    // `case` is the variables' table: the file may hold neither its name
    // nor its target, in the replicator's configuration or the retrier's.
    let clash = dir.join("clash.toml");
    std::fs::write(&clash, "[[tables]]\nname = \"codes\"\nsource = { schema = \"S\", table = \"C\" }\ntarget = { schema = \"public\", table = \"case\" }\nconsume = \"delete\"\n\n[[tables]]\nname = \"case\"\nsource = { schema = \"S\", table = \"D\" }\ntarget = { schema = \"public\", table = \"d\" }\nconsume = \"delete\"\n\n[[tables]]\nname = \"reads_case\"\nsource = { database = \"analytics\", schema = \"PUBLIC\", table = \"case\" }\ntarget = { schema = \"public\", table = \"e\" }\nconsume = \"delete\"\n").unwrap();
    let mut vars = valid();
    vars.insert("TABLES_FILE".into(), clash.display().to_string());
    let err = read(vars.clone()).unwrap_err().to_string();
    for (table, why) in [
        ("codes", "it writes case's Postgres table"),
        ("case", "its name is case's in the ledger"),
        ("reads_case", "it reads case's Snowflake table"),
    ] {
        assert!(
            err.contains(&format!(
                "table {table}: this is the case table (public.case: {why})"
            )),
            "{table}: {err}"
        );
    }
    // The retrier reads no Snowflake table: its clashes are the target's
    // and the name's.
    let err = RetrierConfig::from_vars(Env::from_map(vars))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table codes: this is the case table") && !err.contains("reads_case"),
        "{err}"
    );
    // With another POSTGRES_TABLE, the name `case` is still the built-in
    // table's (its logs, metrics and response).
    let mut vars = valid();
    vars.insert("TABLES_FILE".into(), clash.display().to_string());
    vars.insert("POSTGRES_TABLE".into(), "countries".into());
    let err = read(vars).unwrap_err().to_string();
    assert!(
        err.contains("table case: this is the case table (public.countries: its name is the built-in table's)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_case_table_is_the_mapping_the_variables_make() {
    let mut vars = valid();
    vars.insert("SNOWFLAKE_ID_COLUMN".into(), "ID".into());
    vars.insert("POSTGRES_TABLE".into(), "countries".into());
    let case = read(vars).unwrap().case_table();
    assert_eq!(case.name, "case", "its name in logs and metrics");
    assert_eq!(case.target_table.as_str(), "countries");
    assert_eq!(
        (
            case.source_database.as_deref(),
            case.source_schema.as_deref()
        ),
        (None, None)
    );
    assert_eq!(case.key, ["country_id"]);
    assert_eq!(
        case.columns.as_deref(),
        Some(&["ID".to_string(), "COUNTRY".to_string()][..])
    );
    assert_eq!(
        case.renames,
        [
            ("ID".to_string(), "country_id".to_string()),
            ("COUNTRY".to_string(), "country".to_string())
        ]
    );
    assert_eq!(
        case.rules,
        [(
            "country".to_string(),
            crate::config::tables::Rule::CountryCode
        )]
    );
    assert!(case.is_case);
}

#[test]
fn retrier_and_reporter_configs_name_their_variables() {
    let mut vars = valid();
    vars.insert("RETRY_BACKOFF_BASE_SECONDS".into(), "60".into());
    vars.insert("RETRY_BACKOFF_MAX_SECONDS".into(), "30".into());
    let err = RetrierConfig::from_vars(Env::from_map(vars)).unwrap_err();
    assert!(err.mentions("RETRY_BACKOFF_MAX_SECONDS"), "{err}");

    let err = ReporterConfig::from_vars(Env::from_map(valid())).unwrap_err();
    for var in [
        "REPORT_SENDER",
        "REPORT_RECIPIENTS",
        "DEAD_LETTER_QUEUE_URL",
    ] {
        assert!(err.mentions(var), "{var}: {err}");
    }
    let mut vars = valid();
    vars.insert("REPORT_SENDER".into(), "ops@example.com".into());
    vars.insert(
        "REPORT_RECIPIENTS".into(),
        "a@example.com, not-an-address".into(),
    );
    vars.insert("DEAD_LETTER_QUEUE_URL".into(), "http://localhost/q".into());
    let err = ReporterConfig::from_vars(Env::from_map(vars.clone())).unwrap_err();
    assert!(
        err.mentions("REPORT_RECIPIENTS") && err.problems.len() == 1,
        "{err}"
    );
    vars.insert(
        "REPORT_RECIPIENTS".into(),
        "a@example.com, b@example.org".into(),
    );
    let ok = ReporterConfig::from_vars(Env::from_map(vars)).unwrap();
    assert_eq!(ok.recipients, vec!["a@example.com", "b@example.org"]);
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let config = read(valid()).expect("valid config");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );

    let mut vars = valid();
    vars.insert("PGPORT".into(), "nope".into());
    let err = read(vars).unwrap_err().to_string();
    assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
}

fn valid_for_all() -> HashMap<String, String> {
    let mut vars = valid();
    for (k, v) in [
        (
            "DEAD_LETTER_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123/dlq",
        ),
        ("REPORT_SENDER", "ops@example.com"),
        ("REPORT_RECIPIENTS", "a@example.com"),
        // The pair must keep base <= max at both ends of each range.
        ("RETRY_BACKOFF_BASE_SECONDS", "0"),
        ("RETRY_BACKOFF_MAX_SECONDS", "43200"),
        (
            "CHANGES_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123/changes.fifo",
        ),
        (
            "CHANGES_DEAD_LETTER_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123/changes-dlq.fifo",
        ),
    ] {
        vars.insert(k.into(), v.into());
    }
    vars
}

/// Reads the configuration of every function that reads `variable`;
/// returns each outcome, and the variables read.
fn read_all(vars: &HashMap<String, String>) -> (Vec<Result<(), ConfigError>>, Vec<&'static str>) {
    let mut results = Vec::new();
    let mut read = Vec::new();
    let mut env = Env::from_map(vars.clone());
    results.push(ReplicatorConfig::read_from(&mut env).map(drop));
    read.extend(env.variables_read());
    let mut env = Env::from_map(vars.clone());
    results.push(RetrierConfig::read_from(&mut env).map(drop));
    read.extend(env.variables_read());
    let mut env = Env::from_map(vars.clone());
    results.push(ReporterConfig::read_from(&mut env).map(drop));
    read.extend(env.variables_read());
    let mut env = Env::from_map(vars.clone());
    results.push(PublisherConfig::read_from(&mut env).map(drop));
    read.extend(env.variables_read());
    let mut env = Env::from_map(vars.clone());
    results.push(WriterConfig::read_from(&mut env).map(drop));
    read.extend(env.variables_read());
    (results, read)
}

#[test]
fn each_function_reads_exactly_the_variables_declared_for_it() {
    type Reader = fn(&mut Env) -> Result<(), ConfigError>;
    let readers: [(Function, Reader); 5] = [
        (Function::Replicator, |env| {
            ReplicatorConfig::read_from(env).map(drop)
        }),
        (Function::Retrier, |env| {
            RetrierConfig::read_from(env).map(drop)
        }),
        (Function::Reporter, |env| {
            ReporterConfig::read_from(env).map(drop)
        }),
        (Function::Publisher, |env| {
            PublisherConfig::read_from(env).map(drop)
        }),
        (Function::Writer, |env| {
            WriterConfig::read_from(env).map(drop)
        }),
    ];
    for (function, read) in readers {
        let mut env = Env::from_map(valid_for_all());
        assert!(read(&mut env).is_ok(), "{}", function.name());
        let mut declared: Vec<&str> = vars::ALL
            .iter()
            // Secret ARNs are resolved before the configuration is read.
            .filter(|v| v.rule != Rule::SecretArn && v.read_by.contains(&function))
            .map(|v| v.name)
            .collect();
        declared.sort_unstable();
        // Secret ARNs may also be read (the Postgres one, to read a rotated
        // password again), but are not required to be.
        let read: Vec<&str> = env
            .variables_read()
            .into_iter()
            .filter(|name| {
                vars::ALL
                    .iter()
                    .any(|v| v.name == *name && v.rule != Rule::SecretArn)
            })
            .collect();
        assert_eq!(read, declared, "{}", function.name());
    }
}

/// Every variable missing, empty, malformed and out of range: each case
/// either falls back to the documented default or is refused with an
/// error that names that variable (and only it), never a panic, never a
/// secret in the message.
#[test]
fn every_variable_missing_empty_malformed_or_out_of_range() {
    let mut tried = 0;
    for var in vars::ALL {
        let (variable, rule) = (&var.name, &var.rule);
        let refused: Vec<(&str, String)> = match rule {
            Rule::RequiredText | Rule::RequiredUrl | Rule::Email | Rule::EmailList => {
                vec![("missing", String::new()), ("empty", " ".into())]
            }
            _ => vec![],
        };
        let mut refused = refused;
        let mut accepted: Vec<(&str, String)> = Vec::new();
        match rule {
            Rule::RequiredText => accepted.push(("any text", "x-y_z.1".into())),
            Rule::OptionalText { .. } | Rule::Password | Rule::SecretArn => {
                accepted.extend([("missing", String::new()), ("empty", String::new())])
            }
            Rule::Number { min, max, .. } => {
                accepted.extend([("missing", String::new()), ("empty", " ".into())]);
                accepted.extend([("minimum", min.to_string()), ("maximum", max.to_string())]);
                refused.extend([
                    ("below the range", (min - 1).to_string()),
                    ("above the range", (max + 1).to_string()),
                    ("not a number", "lots".into()),
                    ("a fraction", "1.5".into()),
                    ("huge", "99999999999999999999999".into()),
                ]);
            }
            Rule::RequiredUrl | Rule::OptionalUrl => {
                refused.extend([
                    ("not http", "sqs://queue".into()),
                    ("no scheme", "localhost:8080".into()),
                    ("junk", "http://[::1".into()),
                ]);
            }
            Rule::Identifier { .. } => {
                accepted.extend([("missing", String::new()), ("empty", " ".into())]);
                refused.extend([
                    ("quoted", "\"case\"".into()),
                    ("SQL", "case; drop table x".into()),
                    ("too long", "a".repeat(300)),
                ]);
            }
            Rule::SslMode => {
                accepted.push(("missing", String::new()));
                refused.extend([("unknown", "verify_full".into()), ("junk", "\u{7}".into())]);
            }
            Rule::File { .. } => {
                accepted.push(("missing", String::new()));
                refused.extend([
                    ("no such file", "/nonexistent/ca.pem".into()),
                    ("a folder", "/".into()),
                ]);
            }
            Rule::Email => refused.extend([
                ("not an address", "nobody".into()),
                ("two @", "a@b@c.d".into()),
            ]),
            Rule::EmailList => refused.extend([
                ("one bad address", "a@example.com, nope".into()),
                ("only commas", ",,".into()),
                ("too many", vec!["a@example.com"; 51].join(",")),
            ]),
            Rule::SnowflakeAuth => {}
        }
        for (case, value) in &accepted {
            let mut vars = valid_for_all();
            if *case == "missing" {
                vars.remove(*variable);
            } else {
                vars.insert(variable.to_string(), value.clone());
            }
            let (results, _) = read_all(&vars);
            for r in results {
                assert!(r.is_ok(), "{variable} {case} ({value:?}): {r:?}");
            }
            tried += 1;
        }
        for (case, value) in &refused {
            let mut vars = valid_for_all();
            if *case == "missing" {
                vars.remove(*variable);
            } else {
                vars.insert(variable.to_string(), value.clone());
            }
            let (results, read) = read_all(&vars);
            let errors: Vec<ConfigError> = results.into_iter().filter_map(Result::err).collect();
            assert!(
                !errors.is_empty(),
                "{variable} {case} ({value:?}) was accepted"
            );
            assert!(read.contains(variable));
            for err in errors {
                assert!(err.mentions(variable), "{variable} {case}: {err}");
                assert_eq!(err.problems.len(), 1, "{variable} {case}: {err}");
                let shown = err.to_string();
                assert!(
                    !shown.contains("hunter2") && !shown.contains("s3cret"),
                    "{shown}"
                );
            }
            tried += 1;
        }
    }
    // The authentication pair: neither, both, and a key that is not PEM.
    let mut neither = valid_for_all();
    neither.remove("SNOWFLAKE_PASSWORD");
    let mut both = valid_for_all();
    both.insert(
        "SNOWFLAKE_PRIVATE_KEY".into(),
        "-----BEGIN PRIVATE KEY-----".into(),
    );
    let mut not_pem = neither.clone();
    not_pem.insert("SNOWFLAKE_PRIVATE_KEY".into(), "hunter2".into());
    for (vars, variable) in [
        (neither, "SNOWFLAKE_PASSWORD"),
        (both, "SNOWFLAKE_PASSWORD"),
        (not_pem, "SNOWFLAKE_PRIVATE_KEY"),
    ] {
        let err = ReplicatorConfig::from_vars(Env::from_map(vars)).unwrap_err();
        assert!(err.mentions(variable) && err.problems.len() == 1, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        tried += 1;
    }
    assert!(tried >= 185, "{tried} cases: a case was dropped");
}
