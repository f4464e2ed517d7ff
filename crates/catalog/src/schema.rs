//! The catalog's schema, one migration per step, the same SQL for SQLite and PostgreSQL
//! (portable types: `TEXT`, `BIGINT`; booleans are 0/1; times are milliseconds since the
//! Unix epoch; JSON is kept as text).

/// Migrations in order: (version, description, statements).
pub const MIGRATIONS: &[(i64, &str, &[&str])] = &[
    (
        1,
        "tasks, events, client tokens, snapshots, images, settings",
        &[
            "CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            status_message TEXT NOT NULL,
            progress BIGINT NOT NULL DEFAULT 0,
            request TEXT NOT NULL,
            result TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            ended_ms BIGINT,
            lease_owner TEXT,
            lease_until_ms BIGINT,
            cancel_requested BIGINT NOT NULL DEFAULT 0,
            attempts BIGINT NOT NULL DEFAULT 0,
            checkpoint TEXT
        )",
            "CREATE INDEX tasks_claim ON tasks (status, lease_until_ms)",
            "CREATE INDEX tasks_account ON tasks (account, kind, created_ms)",
            "CREATE TABLE task_events (
            task_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            status TEXT NOT NULL,
            message TEXT NOT NULL,
            progress BIGINT NOT NULL,
            worker TEXT,
            PRIMARY KEY (task_id, seq)
        )",
            "CREATE TABLE client_tokens (
            account TEXT NOT NULL,
            action TEXT NOT NULL,
            token TEXT NOT NULL,
            params_hash TEXT NOT NULL,
            task_id TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (account, action, token)
        )",
            "CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            task_id TEXT,
            volume_size BIGINT NOT NULL,
            encrypted BIGINT NOT NULL,
            kms_key_id TEXT,
            state TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            created_ms BIGINT NOT NULL
        )",
            "CREATE INDEX snapshots_account ON snapshots (account)",
            "CREATE INDEX snapshots_task ON snapshots (task_id)",
            "CREATE TABLE images (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            task_id TEXT,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            architecture TEXT NOT NULL,
            platform TEXT NOT NULL,
            boot_mode TEXT,
            block_devices TEXT NOT NULL,
            encrypted BIGINT NOT NULL,
            kms_key_id TEXT,
            state TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            created_ms BIGINT NOT NULL
        )",
            "CREATE INDEX images_account ON images (account)",
            "CREATE UNIQUE INDEX images_task ON images (task_id)",
            "CREATE TABLE settings (
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (account, name)
        )",
        ],
    ),
    (
        2,
        "identity: users, access keys (secrets sealed), policies, roles, attachments",
        &[
            "CREATE TABLE iam_users (
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (account, name)
        )",
            "CREATE TABLE iam_roles (
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (account, name)
        )",
            "CREATE TABLE iam_access_keys (
            access_key_id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            user_name TEXT NOT NULL,
            secret_sealed TEXT NOT NULL,
            status TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_used_ms BIGINT
        )",
            "CREATE INDEX iam_access_keys_user ON iam_access_keys (account, user_name)",
            "CREATE TABLE iam_policies (
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            document TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (account, name)
        )",
            "CREATE TABLE iam_attachments (
            account TEXT NOT NULL,
            principal_kind TEXT NOT NULL,
            principal TEXT NOT NULL,
            policy TEXT NOT NULL,
            PRIMARY KEY (account, principal_kind, principal, policy)
        )",
        ],
    ),
    (
        3,
        "multi-factor devices and temporary credentials",
        &[
            "CREATE TABLE iam_mfa_devices (
                account TEXT NOT NULL,
                user_name TEXT NOT NULL,
                secret_sealed TEXT NOT NULL,
                last_step BIGINT NOT NULL DEFAULT 0,
                created_ms BIGINT NOT NULL,
                PRIMARY KEY (account, user_name)
            )",
            "CREATE TABLE iam_sessions (
                access_key_id TEXT PRIMARY KEY,
                account TEXT NOT NULL,
                user_name TEXT NOT NULL,
                secret_sealed TEXT NOT NULL,
                token_hash TEXT NOT NULL,
                mfa BIGINT NOT NULL,
                expires_ms BIGINT NOT NULL,
                created_ms BIGINT NOT NULL
            )",
        ],
    ),
    (
        4,
        "request counts per principal and window, shared by every node",
        &["CREATE TABLE rate_windows (
                principal TEXT NOT NULL,
                window_start BIGINT NOT NULL,
                count BIGINT NOT NULL,
                PRIMARY KEY (principal, window_start)
            )"],
    ),
    (
        5,
        "image and snapshot details (usage operation, license, deprecation, copy source), and \
         sharing: launch and create-volume permissions",
        &[
            "ALTER TABLE images ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE snapshots ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'",
            "CREATE TABLE permissions (
                resource_id TEXT NOT NULL,
                owner TEXT NOT NULL,
                grantee TEXT NOT NULL,
                created_ms BIGINT NOT NULL,
                PRIMARY KEY (resource_id, grantee)
            )",
            "CREATE INDEX permissions_grantee ON permissions (grantee)",
        ],
    ),
    (
        6,
        "the sealed part of a task's request (a presigned URL's query), dropped when it ends",
        &["ALTER TABLE tasks ADD COLUMN sealed TEXT"],
    ),
    (
        7,
        "failed MFA codes per device, shared by every node: count, last failure, back-off",
        &[
            "ALTER TABLE iam_mfa_devices ADD COLUMN failures BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE iam_mfa_devices ADD COLUMN last_failure_ms BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE iam_mfa_devices ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0",
        ],
    ),
    (
        8,
        "IAM on the endpoint: role trust policies, inline policies, virtual MFA devices by \
         serial number, sessions of assumed roles",
        &[
            "ALTER TABLE iam_roles ADD COLUMN trust_policy TEXT",
            "ALTER TABLE iam_roles ADD COLUMN description TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE iam_roles ADD COLUMN max_session BIGINT NOT NULL DEFAULT 3600",
            "CREATE TABLE iam_inline_policies (
                account TEXT NOT NULL,
                principal_kind TEXT NOT NULL,
                principal TEXT NOT NULL,
                name TEXT NOT NULL,
                document TEXT NOT NULL,
                PRIMARY KEY (account, principal_kind, principal, name)
            )",
            "CREATE TABLE iam_virtual_mfa (
                account TEXT NOT NULL,
                serial TEXT NOT NULL,
                secret_sealed TEXT NOT NULL,
                user_name TEXT,
                created_ms BIGINT NOT NULL,
                enabled_ms BIGINT,
                PRIMARY KEY (account, serial)
            )",
            "ALTER TABLE iam_mfa_devices ADD COLUMN serial TEXT",
            "ALTER TABLE iam_sessions ADD COLUMN role_name TEXT",
            "ALTER TABLE iam_sessions ADD COLUMN session_name TEXT",
            "ALTER TABLE iam_sessions ADD COLUMN session_policy TEXT",
        ],
    ),
    (
        9,
        "console passwords: one login profile per IAM user (an argon2id hash), with failed \
         sign-ins counted and backed off like MFA codes",
        &["CREATE TABLE iam_login_profiles (
                account TEXT NOT NULL,
                user_name TEXT NOT NULL,
                password_hash TEXT NOT NULL,
                reset_required BIGINT NOT NULL DEFAULT 0,
                created_ms BIGINT NOT NULL,
                failures BIGINT NOT NULL DEFAULT 0,
                last_failure_ms BIGINT NOT NULL DEFAULT 0,
                next_attempt_ms BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (account, user_name)
            )"],
    ),
];
