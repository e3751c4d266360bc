-- The original system's tables, typed, with real keys. Value domains (attr_b in a..d,
-- label in 0/1, ranges) are data-quality checks with a severity (`pipeline check`), not
-- constraints, so that a warning-level finding never blocks a load.

-- Type-2 slowly changing dimension: several rows per customer; an empty valid_to marks
-- the current row.
CREATE TABLE customer_activity (
    idx        bigint           NOT NULL,
    valid_from date             NOT NULL,
    valid_to   date,
    scd_a      double precision NOT NULL,
    scd_b      integer          NOT NULL,
    PRIMARY KEY (idx, valid_from)
);
-- The feature build reads only the current row of each customer.
CREATE INDEX customer_activity_current ON customer_activity (idx) WHERE valid_to IS NULL;

CREATE TABLE customer_profiles (
    idx    bigint   PRIMARY KEY,
    attr_a smallint NOT NULL,
    attr_b text     NOT NULL,
    attr_c text     NOT NULL
);

CREATE TABLE labels (
    idx   bigint   PRIMARY KEY,
    label smallint NOT NULL
);

CREATE TABLE store_locations (
    idx      integer PRIMARY KEY,
    location text    NOT NULL
);

-- One row per sale. `idx` is unique within a month's file; a month is replaced as a
-- whole, keyed by sale_month.
CREATE TABLE sales (
    idx        bigint           NOT NULL,
    value      double precision NOT NULL,
    date       date             NOT NULL,
    store_idx  integer          NOT NULL,
    sale_month date GENERATED ALWAYS AS (date_trunc('month', date::timestamp)::date) STORED,
    PRIMARY KEY (sale_month, idx)
);
CREATE INDEX sales_store_month ON sales (store_idx, sale_month);

CREATE TABLE monthly_sales (
    store_idx  integer          NOT NULL,
    location   text             NOT NULL,
    sale_month date             NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (store_idx, sale_month)
);
CREATE INDEX monthly_sales_month ON monthly_sales (sale_month);

-- One row per customer, built from the current activity row, the profile and the label.
CREATE TABLE feature_store (
    idx    bigint           PRIMARY KEY,
    attr_a smallint         NOT NULL,
    attr_b text             NOT NULL,
    scd_a  double precision NOT NULL,
    scd_b  integer          NOT NULL,
    label  smallint
);

-- The run ledger: every attempt of every job for every period.
CREATE TABLE pipeline_runs (
    id          bigserial   PRIMARY KEY,
    job         text        NOT NULL,
    period      text        NOT NULL,
    status      text        NOT NULL
        CHECK (status IN ('running', 'success', 'failed', 'waiting', 'skipped')),
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    rows_loaded bigint,
    error       text,
    CHECK (finished_at IS NULL OR finished_at >= started_at)
);
CREATE INDEX pipeline_runs_job_period ON pipeline_runs (job, period, started_at DESC);

-- Data-quality results, one row per check per run.
CREATE TABLE dq_results (
    id           bigserial   PRIMARY KEY,
    run_id       bigint      REFERENCES pipeline_runs (id) ON DELETE SET NULL,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    table_name   text        NOT NULL,
    check_name   text        NOT NULL,
    severity     text        NOT NULL CHECK (severity IN ('warn', 'error')),
    passed       boolean     NOT NULL,
    failing_rows bigint      NOT NULL DEFAULT 0 CHECK (failing_rows >= 0),
    sample       jsonb,
    detail       text
);
CREATE INDEX dq_results_checked ON dq_results (checked_at DESC);
CREATE INDEX dq_results_run ON dq_results (run_id);
