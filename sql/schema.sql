-- mmlake lake schema. Applied idempotently on every write connection (CREATE ... IF NOT EXISTS).
-- Every data table carries materialization_id -> materializations, the provenance ledger.

-- ============================================================ core (ingest)
CREATE TABLE IF NOT EXISTS materializations (
    materialization_id VARCHAR PRIMARY KEY,
    asset_key          VARCHAR NOT NULL,   -- e.g. 'chips', 'segmentation_louvain'
    partition_key      VARCHAR,            -- Dagster partition key ('0.1|pristine'), NULL if unpartitioned
    session_id         VARCHAR,            -- 'sample@dose' for STEM partitions
    run_id             VARCHAR,            -- Dagster run id (NULL when called outside Dagster)
    code_version       VARCHAR NOT NULL,
    data_version       VARCHAR NOT NULL,   -- hash(code_version, parameters, upstream data versions)
    parameters         JSON,
    upstream_ids       VARCHAR[],          -- materialization ids this one read
    software           JSON,               -- library versions
    device             VARCHAR,            -- cpu / cuda:0 where it matters
    weights            VARCHAR,            -- sha256 of model weights, or 'random:<seed>'
    started_at         TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    row_count          BIGINT,
    is_current         BOOLEAN NOT NULL    -- the newest materialization of (asset_key, partition_key)
);

-- Where a registered session folder lives (written by `mmlake ingest` / the landing sensor). Not data:
-- raw_session copies the files into the object folder, after which only the lake copy is read.
CREATE TABLE IF NOT EXISTS session_sources (
    session_id         VARCHAR NOT NULL,
    campaign           VARCHAR NOT NULL,
    sample             VARCHAR NOT NULL,
    dose_key           VARCHAR NOT NULL,
    folder             VARCHAR NOT NULL,
    manifest_sha256    VARCHAR NOT NULL,
    registered_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    session_id         VARCHAR NOT NULL,   -- sample@dose
    campaign           VARCHAR NOT NULL,
    sample             VARCHAR NOT NULL,
    dose_dpa           DOUBLE NOT NULL,
    dose_key           VARCHAR NOT NULL,
    acquired_at        TIMESTAMPTZ,
    instrument         VARCHAR,
    beam_kv            DOUBLE,
    haadf_shape        INTEGER[],          -- (rows, cols) of the registered navigation grid
    eds_shape          INTEGER[],          -- (rows, cols, channels)
    pixel_size_nm      DOUBLE,
    energy_offset_kev  DOUBLE,
    energy_scale_kev   DOUBLE,
    eds_resolution_mnka_ev DOUBLE,         -- detector FWHM at Mn Ka (file metadata, else 130 eV)
    elements           VARCHAR[],
    chip_px            INTEGER,            -- from the manifest; NULL = derive from the lattice
    has_haadf          BOOLEAN,
    has_eds            BOOLEAN,
    eds_binning        INTEGER,            -- factor the finer grid was binned by to register (1 = none)
    manifest           JSON,
    source_folder      VARCHAR,
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS session_files (
    session_id         VARCHAR NOT NULL,
    role               VARCHAR NOT NULL,   -- manifest, haadf, eds, data, truth
    file_name          VARCHAR NOT NULL,
    sha256             VARCHAR NOT NULL,   -- object in the lake's object folder
    bytes              BIGINT,
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS chip_grids (
    session_id         VARCHAR NOT NULL,
    chip_px            INTEGER NOT NULL,
    chip_px_source     VARCHAR NOT NULL,   -- 'manifest' or 'lattice'
    n_rows             INTEGER NOT NULL,
    n_cols             INTEGER NOT NULL,
    origin_y           INTEGER NOT NULL,
    origin_x           INTEGER NOT NULL,
    pixel_size_nm      DOUBLE,
    haadf_stack_sha    VARCHAR,            -- .npy (n_chips, chip_px, chip_px) float32, NULL without HAADF
    eds_sums_sha       VARCHAR,            -- .npy (n_chips, channels) float32, NULL without EDS
    energy_offset_kev  DOUBLE,
    energy_scale_kev   DOUBLE,
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS chips (
    session_id         VARCHAR NOT NULL,
    chip_index         INTEGER NOT NULL,   -- row * n_cols + col
    row                INTEGER NOT NULL,
    col                INTEGER NOT NULL,
    y0                 INTEGER NOT NULL,   -- top-left pixel in the registered grid
    x0                 INTEGER NOT NULL,
    eds_total_counts   DOUBLE,
    haadf_mean         DOUBLE,
    truth_label        INTEGER,            -- majority ground-truth label, synthetic sessions only
    materialization_id VARCHAR NOT NULL
);

-- ============================================================ features
-- (features) What feature sets a session has, one row per set; status 'absent' when the session
-- lacks the modality, 'skipped' with the reason when an encoder could not run (e.g. no weights).
CREATE TABLE IF NOT EXISTS feature_sets (
    session_id         VARCHAR NOT NULL,
    feature_set        VARCHAR NOT NULL,   -- vgg16, fft, eds_cl
    modality           VARCHAR NOT NULL,   -- haadf, eds
    status             VARCHAR NOT NULL,   -- ok, absent, skipped
    reason             VARCHAR,
    dim                INTEGER,
    n_chips            INTEGER,
    encoder_version    VARCHAR,
    weights            VARCHAR,
    device             VARCHAR,
    chips_per_s        DOUBLE,
    feature_names      VARCHAR[],
    object_sha         VARCHAR,            -- eds_cl: cropped chip spectra (.npy) used for quantification
    details            JSON,
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS haadf_embeddings (
    session_id         VARCHAR NOT NULL,
    encoder            VARCHAR NOT NULL,
    chip_index         INTEGER NOT NULL,
    vector             FLOAT[] NOT NULL,
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS eds_composition (
    session_id         VARCHAR NOT NULL,
    chip_index         INTEGER NOT NULL,
    element            VARCHAR NOT NULL,
    line               VARCHAR NOT NULL,
    atomic_percent     DOUBLE,             -- NULL where the chip has no counts
    intensity          DOUBLE,             -- background-subtracted line counts
    materialization_id VARCHAR NOT NULL
);


-- ============================================================ segmentation
-- One label per chip per (method, modality); modality haadf, eds, ensemble (the preprint's rule per
-- method) and ensemble_auto (fusion weight chosen without ground truth).
CREATE TABLE IF NOT EXISTS segment_labels (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,   -- louvain, agglomerative, fewshot
    modality           VARCHAR NOT NULL,
    chip_index         INTEGER NOT NULL,
    label              INTEGER NOT NULL,
    proba              FLOAT[],            -- few-shot class probabilities (class order = segment_runs.class_names)
    materialization_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS segment_runs (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    modality           VARCHAR NOT NULL,
    n_labels           INTEGER NOT NULL,
    features           JSON,               -- which features fed the modality
    class_names        VARCHAR[],          -- few-shot: label i = class_names[i+1] (SQL lists are 1-based)
    params             JSON,               -- what the segmenter actually used (threshold value, weights...)
    materialization_id VARCHAR NOT NULL
);

-- The preprint's Table I (AMI between modality pairs) plus AMI/ARI against ground truth where known.
CREATE TABLE IF NOT EXISTS agreement (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    pair               VARCHAR NOT NULL,   -- haadf-eds, haadf-ensemble, eds-ensemble, <modality>-truth
    ami                DOUBLE,
    ari                DOUBLE,             -- only against truth
    materialization_id VARCHAR NOT NULL
);

-- ============================================================ descriptors

-- ============================================================ crystal
