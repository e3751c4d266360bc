-- Group roles and their grants. Login users (ds_user, mle_user) and their passwords are
-- made by `pipeline db users`, never here: no secret lives in the repository.
--
-- The original system granted SELECT on the tables that existed at grant time, so its
-- read-only user could not read any table created later. Default privileges fix that:
-- every table the migrating (owner) role creates from now on is readable by
-- ds_user_role and writable by mle_user_role. `pipeline db users` adds the same for
-- tables that mle_user itself creates.

-- Roles are cluster-wide while migrations run per database; two databases migrating at
-- once may race to create them, hence the exception handler.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ds_user_role') THEN
        CREATE ROLE ds_user_role NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mle_user_role') THEN
        CREATE ROLE mle_user_role NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Nobody creates objects in public but the owner and mle_user_role (PostgreSQL 15+
-- already defaults to this; older clusters and restored dumps may not).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Read-only.
GRANT USAGE ON SCHEMA public TO ds_user_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO ds_user_role;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO ds_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ds_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO ds_user_role;

-- Everything.
GRANT USAGE, CREATE ON SCHEMA public TO mle_user_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO mle_user_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO mle_user_role;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO mle_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO mle_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO mle_user_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO mle_user_role;
