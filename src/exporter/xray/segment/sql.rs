//! The `sql` object, for SQL databases only.

use std::borrow::Cow;

use super::attrs::{Attrs, Field, Used};
use super::document::Sql;

/// `db.system` values of SQL databases, both spellings.
pub(super) fn is_sql(system: &str) -> bool {
    matches!(
        system,
        "mysql"
            | "postgresql"
            | "mariadb"
            | "mssql"
            | "microsoft.sql_server"
            | "mssqlcompact"
            | "oracle"
            | "oracle.db"
            | "db2"
            | "ibm.db2"
            | "sqlite"
            | "h2"
            | "hsqldb"
            | "derby"
            | "hive"
            | "teradata"
            | "cockroachdb"
            | "redshift"
            | "aws.redshift"
            | "clickhouse"
            | "trino"
            | "spanner"
            | "gcp.spanner"
            | "sap.hana"
            | "hanadb"
            | "sybase"
            | "vertica"
            | "netezza"
            | "firebird"
            | "informix"
            | "ingres"
            | "interbase"
            | "tidb"
            | "other_sql"
    )
}

pub(super) fn make_sql<'d>(attrs: &'d Attrs<'d>, used: &mut Used) -> Option<Sql<'d>> {
    use Field::*;
    let system = attrs.str(DbSystem).filter(|system| is_sql(system))?;
    for field in [DbSystem, DbName, DbStatement, DbUser, DbConnectionString] {
        used.add(field);
    }
    let (mut url, mut connection_string) = (None, None);
    match attrs.str(DbConnectionString) {
        Some(conn) if conn.contains("://") => url = Some(Cow::Borrowed(conn)),
        Some(conn) => connection_string = Some(conn),
        None => {
            if let Some(host) = attrs.str(ServerAddress).or_else(|| attrs.str(NetPeerName)) {
                let mut built = format!("{system}://{host}");
                if let Some(port) = attrs.port(ServerPort).or_else(|| attrs.port(NetPeerPort)) {
                    built.push(':');
                    built.push_str(&port);
                }
                built.push('/');
                built.push_str(attrs.str(DbName).unwrap_or_default());
                url = Some(Cow::Owned(built));
            }
        }
    }
    Some(Sql {
        url,
        connection_string,
        database_type: system,
        user: attrs.str(DbUser),
        sanitized_query: attrs.str(DbStatement),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::exporter::xray::segment::tests::*;
    use crate::model::SpanKind;

    #[test]
    fn sql_for_sql_databases_only() {
        let postgres = span(
            SpanKind::Client,
            &[
                ("db.system", s("postgresql")),
                ("db.name", s("orders")),
                ("db.statement", s("SELECT * FROM orders WHERE id = ?")),
                ("db.user", s("app")),
                ("server.address", s("db.internal")),
                ("server.port", i(5432)),
            ],
        );
        let out = doc(&postgres);
        assert_eq!(out["name"], "orders@db.internal");
        assert_eq!(out["namespace"], "remote");
        assert_eq!(
            out["sql"],
            json!({"url": "postgresql://db.internal:5432/orders", "database_type": "postgresql",
                   "user": "app", "sanitized_query": "SELECT * FROM orders WHERE id = ?"})
        );
        assert_eq!(
            out["metadata"]["default"],
            json!({"server.address": "db.internal", "server.port": 5432})
        );

        let current = span(
            SpanKind::Client,
            &[
                ("db.system.name", s("mysql")),
                ("db.namespace", s("shop")),
                ("db.query.text", s("UPDATE cart SET n = ?")),
                ("net.peer.name", s("mysql-0")),
            ],
        );
        let out = doc(&current);
        assert_eq!(out["name"], "shop@mysql-0");
        assert_eq!(
            out["sql"],
            json!({"url": "mysql://mysql-0/shop", "database_type": "mysql",
                   "sanitized_query": "UPDATE cart SET n = ?"})
        );

        let jdbc = span(
            SpanKind::Client,
            &[
                ("db.system", s("postgresql")),
                ("db.name", s("ebdb")),
                (
                    "db.connection_string",
                    s("jdbc:postgresql://rds.example:5432/ebdb"),
                ),
            ],
        );
        let out = doc(&jdbc);
        assert_eq!(out["name"], "ebdb@rds.example");
        assert_eq!(out["sql"]["url"], "jdbc:postgresql://rds.example:5432/ebdb");
        let mssql = span(
            SpanKind::Client,
            &[
                ("db.system", s("mssql")),
                ("db.connection_string", s("Server=tcp:sql1;Database=shop")),
            ],
        );
        assert_eq!(
            doc(&mssql)["sql"],
            json!({"connection_string": "Server=tcp:sql1;Database=shop", "database_type": "mssql"})
        );

        let redis = span(
            SpanKind::Client,
            &[("db.system", s("redis")), ("db.statement", s("GET k"))],
        );
        let out = doc(&redis);
        assert!(out.get("sql").is_none());
        assert_eq!(out["name"], "redis");
        assert_eq!(
            out["metadata"]["default"],
            json!({"db.system": "redis", "db.statement": "GET k"})
        );
    }
}
