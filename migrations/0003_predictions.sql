-- The prediction log: one row per instance the server scored, written by the server's
-- PostgreSQL sink with batched binary COPY (server/src/predlog.rs). Rows are appended,
-- never updated. Grants come from 0002's default privileges: ds_user_role reads it,
-- mle_user_role (the server's login) writes it.
--
-- The features are columns, typed as the request's (wider than feature_store's: the
-- server accepts any 64-bit integer), so predictions join feature_store on idx for drift
-- and outcome analysis.
CREATE TABLE predictions (
    id            bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts            timestamptz      NOT NULL,
    idx           bigint           NOT NULL,
    attr_a        bigint           NOT NULL,
    attr_b        text             NOT NULL,
    scd_a         double precision NOT NULL,
    scd_b         bigint           NOT NULL,
    label         smallint         NOT NULL,
    probability   double precision NOT NULL,
    model_version text             NOT NULL,
    latency_us    bigint           NOT NULL
);
CREATE INDEX predictions_ts ON predictions (ts);
CREATE INDEX predictions_idx ON predictions (idx, ts);
