//! The type mapping, declared once: which Snowflake column type
//! ([`SourceType`]) may go into which Postgres column type
//! ([`TargetType`]), and what the column keeps of each value
//! ([`mapping`]). The README's type table is made from it
//! (`tests/readme_tables.rs`). A pair it refuses is an impossible mapping,
//! found before any row moves; a value a possible mapping cannot take (out
//! of a column's range, too long) is a row-level failure of that row alone.

/// A Snowflake column type, as its Arrow field's metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    Fixed {
        precision: u8,
        scale: u8,
    },
    Real,
    Text,
    Boolean,
    Date,
    Time {
        scale: u8,
    },
    TimestampNtz {
        scale: u8,
    },
    TimestampLtz {
        scale: u8,
    },
    TimestampTz {
        scale: u8,
    },
    Binary,
    /// `VARIANT`, `OBJECT` and `ARRAY`: JSON text.
    SemiStructured,
}

impl SourceType {
    /// From the type `DESCRIBE TABLE` shows, e.g. `NUMBER(38,0)`,
    /// `TIMESTAMP_TZ(3)`, `VARCHAR(16777216)`; `Err` names a type this
    /// product does not read (`GEOGRAPHY`, `VECTOR`, ...).
    pub fn from_declared(declared: &str) -> Result<Self, String> {
        let text = declared.trim().to_ascii_uppercase();
        let (name, args) = match text.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.strip_suffix(')').unwrap_or(rest)),
            None => (text.as_str(), ""),
        };
        let args: Vec<&str> = args
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let number = |i: usize, default: u8, max: u8| -> Result<u8, String> {
            match args.get(i) {
                None => Ok(default),
                Some(a) => a
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("type {declared}: {a:?} is not 0 to {max}")),
            }
        };
        let scaled = |make: fn(u8) -> Self| number(0, 9, 9).map(make);
        Ok(match name {
            "NUMBER" | "DECIMAL" | "NUMERIC" => Self::Fixed {
                precision: number(0, 38, 38)?,
                scale: number(1, 0, 37)?,
            },
            "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => Self::Fixed {
                precision: 38,
                scale: 0,
            },
            "FLOAT" | "FLOAT4" | "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" => Self::Real,
            "VARCHAR" | "TEXT" | "STRING" | "CHAR" | "CHARACTER" => Self::Text,
            "BOOLEAN" => Self::Boolean,
            "DATE" => Self::Date,
            "TIME" => scaled(|scale| Self::Time { scale })?,
            "TIMESTAMP_NTZ" | "DATETIME" => scaled(|scale| Self::TimestampNtz { scale })?,
            "TIMESTAMP_LTZ" => scaled(|scale| Self::TimestampLtz { scale })?,
            "TIMESTAMP_TZ" => scaled(|scale| Self::TimestampTz { scale })?,
            "BINARY" | "VARBINARY" => Self::Binary,
            "VARIANT" | "OBJECT" | "ARRAY" => Self::SemiStructured,
            _ => return Err(format!("type {declared} is not a type this product reads")),
        })
    }
}

/// A Postgres column type a source column can be written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Smallint,
    Integer,
    Bigint,
    Numeric,
    Double,
    Text,
    Varchar,
    Boolean,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Jsonb,
    Bytea,
}

impl TargetType {
    /// From Postgres's own type name (`pg_type.typname`), e.g. `int4`.
    pub fn from_pg_name(name: &str) -> Option<Self> {
        Some(match name {
            "int2" => Self::Smallint,
            "int4" => Self::Integer,
            "int8" => Self::Bigint,
            "numeric" => Self::Numeric,
            "float8" => Self::Double,
            "text" => Self::Text,
            "varchar" => Self::Varchar,
            "bool" => Self::Boolean,
            "date" => Self::Date,
            "time" => Self::Time,
            "timestamp" => Self::Timestamp,
            "timestamptz" => Self::Timestamptz,
            "jsonb" => Self::Jsonb,
            "bytea" => Self::Bytea,
            _ => return None,
        })
    }

    /// The type as SQL (and the README) names it, e.g. `double precision`.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Smallint => "smallint",
            Self::Integer => "integer",
            Self::Bigint => "bigint",
            Self::Numeric => "numeric",
            Self::Double => "double precision",
            Self::Text => "text",
            Self::Varchar => "varchar(n)",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Time => "time",
            Self::Timestamp => "timestamp",
            Self::Timestamptz => "timestamptz",
            Self::Jsonb => "jsonb",
            Self::Bytea => "bytea",
        }
    }
}

/// What a column keeps of a source value, and what it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// What is kept exactly, and what is truncated or normalised.
    pub kept: &'static str,
    /// Values refused as row-level failures ("" when none can be).
    pub refused: &'static str,
}

const fn map(kept: &'static str, refused: &'static str) -> Result<Mapping, String> {
    Ok(Mapping { kept, refused })
}

/// Whether `source` may go into `target`, and how; `Err` says why not.
pub fn mapping(source: SourceType, target: TargetType) -> Result<Mapping, String> {
    use SourceType as S;
    use TargetType as T;
    const EXACT: &str = "exact";
    const MICROS: &str = "exact to the microsecond; nanoseconds truncated";
    let integer = |precision: u8, digits: u8| {
        if precision <= digits {
            map(EXACT, "")
        } else {
            map(EXACT, "a value out of the column's range")
        }
    };
    match (source, target) {
        (S::Fixed { scale: 0, precision }, T::Smallint) => integer(precision, 4),
        (S::Fixed { scale: 0, precision }, T::Integer) => integer(precision, 9),
        (S::Fixed { scale: 0, precision }, T::Bigint) => integer(precision, 18),
        (S::Fixed { .. }, T::Numeric) => map("exact, all 38 digits and the scale", ""),
        (S::Real, T::Double) => map("exact, NaN and ±Infinity included", ""),
        (S::Text, T::Text) => map(EXACT, "a NUL character (Postgres text cannot hold one)"),
        (S::Text, T::Varchar) => map(EXACT, "a NUL character; a value longer than n"),
        (S::Boolean, T::Boolean) | (S::Date, T::Date) | (S::Binary, T::Bytea) => map(EXACT, ""),
        (S::Time { .. }, T::Time) | (S::TimestampNtz { .. }, T::Timestamp) => map(MICROS, ""),
        (S::TimestampLtz { .. }, T::Timestamptz) => map(MICROS, ""),
        (S::TimestampTz { .. }, T::Timestamptz) => map(
            "the instant, to the microsecond; the offset is not kept (timestamptz stores UTC)",
            "",
        ),
        (S::SemiStructured, T::Jsonb) => map(
            "the JSON value; jsonb normalises the text (whitespace, key order, the last of duplicate keys)",
            "text that is not JSON; a \\u0000 escape",
        ),
        (S::Fixed { scale, .. }, T::Smallint | T::Integer | T::Bigint) => Err(format!(
            "a NUMBER with scale {scale} has decimals: its column must be numeric"
        )),
        (source, target) => Err(format!(
            "{source:?} cannot go into a column of type {}",
            target.sql()
        )),
    }
}

/// The README's type table: every mapping [`mapping`] allows.
pub fn markdown_table() -> String {
    let fixed0 = |precision| SourceType::Fixed {
        precision,
        scale: 0,
    };
    let rows: [(&str, SourceType, TargetType); 17] = [
        ("NUMBER(p,0), p ≤ 4", fixed0(4), TargetType::Smallint),
        ("NUMBER(p,0), p ≤ 9", fixed0(9), TargetType::Integer),
        ("NUMBER(p,0), p ≤ 18", fixed0(18), TargetType::Bigint),
        ("NUMBER(38,0)", fixed0(38), TargetType::Bigint),
        (
            "NUMBER(p,s)",
            SourceType::Fixed {
                precision: 38,
                scale: 9,
            },
            TargetType::Numeric,
        ),
        ("FLOAT", SourceType::Real, TargetType::Double),
        ("VARCHAR, TEXT", SourceType::Text, TargetType::Text),
        ("VARCHAR, TEXT", SourceType::Text, TargetType::Varchar),
        ("BOOLEAN", SourceType::Boolean, TargetType::Boolean),
        ("DATE", SourceType::Date, TargetType::Date),
        ("TIME", SourceType::Time { scale: 9 }, TargetType::Time),
        (
            "TIMESTAMP_NTZ",
            SourceType::TimestampNtz { scale: 9 },
            TargetType::Timestamp,
        ),
        (
            "TIMESTAMP_LTZ",
            SourceType::TimestampLtz { scale: 9 },
            TargetType::Timestamptz,
        ),
        (
            "TIMESTAMP_TZ",
            SourceType::TimestampTz { scale: 9 },
            TargetType::Timestamptz,
        ),
        (
            "VARIANT, OBJECT, ARRAY",
            SourceType::SemiStructured,
            TargetType::Jsonb,
        ),
        ("BINARY", SourceType::Binary, TargetType::Bytea),
        ("NUMBER(p,0)", fixed0(38), TargetType::Numeric),
    ];
    let mut out = String::from(
        "| Snowflake | Postgres | kept | refused as a row-level failure |\n|---|---|---|---|\n",
    );
    for (name, source, target) in rows {
        // Every row of the table is a mapping the code allows.
        let Ok(m) = mapping(source, target) else {
            continue;
        };
        let refused = if m.refused.is_empty() {
            "—"
        } else {
            m.refused
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {refused} |\n",
            target.sql(),
            m.kept
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_fit_by_precision_and_a_scale_needs_numeric() {
        let fixed = |precision, scale| SourceType::Fixed { precision, scale };
        assert_eq!(
            mapping(fixed(9, 0), TargetType::Integer).map(|m| m.refused),
            Ok("")
        );
        assert_eq!(
            mapping(fixed(10, 0), TargetType::Integer).map(|m| m.refused),
            Ok("a value out of the column's range")
        );
        let err = mapping(fixed(10, 2), TargetType::Bigint).unwrap_err();
        assert!(err.contains("scale 2") && err.contains("numeric"), "{err}");
        assert!(mapping(fixed(38, 37), TargetType::Numeric).is_ok());
    }

    #[test]
    fn declared_types_read_as_describe_shows_them() {
        let cases = [
            (
                "NUMBER(38,0)",
                SourceType::Fixed {
                    precision: 38,
                    scale: 0,
                },
            ),
            (
                "NUMBER(12,4)",
                SourceType::Fixed {
                    precision: 12,
                    scale: 4,
                },
            ),
            (
                "number",
                SourceType::Fixed {
                    precision: 38,
                    scale: 0,
                },
            ),
            ("FLOAT", SourceType::Real),
            ("VARCHAR(16777216)", SourceType::Text),
            ("BOOLEAN", SourceType::Boolean),
            ("DATE", SourceType::Date),
            ("TIME(9)", SourceType::Time { scale: 9 }),
            ("TIMESTAMP_NTZ(3)", SourceType::TimestampNtz { scale: 3 }),
            ("TIMESTAMP_LTZ(9)", SourceType::TimestampLtz { scale: 9 }),
            ("TIMESTAMP_TZ", SourceType::TimestampTz { scale: 9 }),
            ("BINARY(8388608)", SourceType::Binary),
            ("VARIANT", SourceType::SemiStructured),
            ("OBJECT", SourceType::SemiStructured),
            ("ARRAY", SourceType::SemiStructured),
        ];
        for (declared, ty) in cases {
            assert_eq!(SourceType::from_declared(declared), Ok(ty), "{declared}");
        }
        let err = SourceType::from_declared("GEOGRAPHY").unwrap_err();
        assert!(
            err.contains("GEOGRAPHY") && err.contains("not a type"),
            "{err}"
        );
        let err = SourceType::from_declared("NUMBER(39,0)").unwrap_err();
        assert!(
            err.contains("NUMBER(39,0)") && err.contains("0 to 38"),
            "{err}"
        );
        assert!(SourceType::from_declared("TIME(12)").is_err());
    }

    #[test]
    fn an_impossible_pair_says_which() {
        let err = mapping(SourceType::Text, TargetType::Integer).unwrap_err();
        assert_eq!(err, "Text cannot go into a column of type integer");
        assert!(mapping(
            SourceType::TimestampNtz { scale: 9 },
            TargetType::Timestamptz
        )
        .is_err());
        assert!(mapping(SourceType::Real, TargetType::Numeric).is_err());
    }

    #[test]
    fn every_postgres_name_maps_back_to_its_type() {
        for name in [
            "int2",
            "int4",
            "int8",
            "numeric",
            "float8",
            "text",
            "varchar",
            "bool",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "jsonb",
            "bytea",
        ] {
            assert!(TargetType::from_pg_name(name).is_some(), "{name}");
        }
        assert_eq!(TargetType::from_pg_name("json"), None);
        // The README table lists only allowed pairs, one line each.
        assert_eq!(markdown_table().lines().count(), 2 + 17);
    }
}
