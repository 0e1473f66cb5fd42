-- mmlake lake schema. Applied idempotently on every write connection (CREATE ... IF NOT EXISTS).
-- Every data table carries materialization_id -> materializations, the provenance ledger.

-- ============================================================ core (ingest)
-- The lake's schema version (mmlake.migrate.CURRENT); mmlake.migrate upgrades older lakes.
CREATE TABLE IF NOT EXISTS schema_meta (
    key                VARCHAR PRIMARY KEY,
    value              VARCHAR NOT NULL,
    updated_at         TIMESTAMPTZ
);

-- The provenance ledger. materialization_id is unique by construction (uuid4 hex, written only by
-- Lake.replace_partition) and carries no PRIMARY KEY: DuckDB re-serializes a table's whole ART index
-- at every checkpoint, so with one the close of every write grew with the ledger (171 ms a write
-- at 200,000 rows, 20 ms without; schema 3 drops it, mmlake.migrate).
CREATE TABLE IF NOT EXISTS materializations (
    materialization_id VARCHAR NOT NULL,
    asset_key          VARCHAR NOT NULL,   -- e.g. 'chips', 'segmentation_louvain'
    partition_key      VARCHAR,            -- Dagster partition key ('0.1|demo.pristine': dose|sample key), NULL if unpartitioned
    session_id         VARCHAR,            -- the session when the partition holds exactly one, else NULL (see session_ids)
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
    is_current         BOOLEAN NOT NULL,   -- the newest materialization of (asset_key, partition_key)
    session_ids        VARCHAR[]           -- every session (acquisition) whose rows this materialization wrote
);

-- The registry of sessions: one row per session identity (campaign + sample + dose + acquisition),
-- written by `mmlake ingest` / the landing sensor before raw_session runs. `folder` is where the files
-- were registered from; raw_session copies them into the object folder, after which only the lake copy
-- is read. content_sha = sha256 over the parsed manifest and every named file's sha256 (never a path):
-- the same bytes from another folder are the same content.
CREATE TABLE IF NOT EXISTS session_sources (
    session_id         VARCHAR NOT NULL,   -- '<campaign key>.<sample>@<dose>~<acquisition>'
    campaign           VARCHAR NOT NULL,
    sample             VARCHAR NOT NULL,
    dose_key           VARCHAR NOT NULL,
    folder             VARCHAR NOT NULL,
    manifest_sha256    VARCHAR NOT NULL,
    registered_at      TIMESTAMPTZ NOT NULL,
    sample_key         VARCHAR,            -- '<campaign key>.<sample>': the sample partition key
    acquisition        VARCHAR,            -- manifest 'acquisition', else acquired_at as 20240501T143000
    partition_key      VARCHAR,            -- Dagster partition key '<dose>|<sample key>'
    content_sha        VARCHAR
);

-- What happened to each session identity, in order: registered, replaced (mmlake ingest --replace: the earlier rows went to the
-- history schema), refused (different content without --replace), failed (could not be read: the
-- registration was withdrawn, stored rows untouched).
CREATE TABLE IF NOT EXISTS session_events (
    session_id         VARCHAR NOT NULL,
    event              VARCHAR NOT NULL,
    content_sha        VARCHAR,
    previous_sha       VARCHAR,
    folder             VARCHAR,
    message            VARCHAR,
    event_at           TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    session_id         VARCHAR NOT NULL,   -- '<campaign key>.<sample>@<dose>~<acquisition>'
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
    materialization_id VARCHAR NOT NULL,
    sample_key         VARCHAR,            -- '<campaign key>.<sample>' (the sample partition key)
    acquisition        VARCHAR,            -- which map of this sample x dose
    partition_key      VARCHAR,            -- '<dose>|<sample key>'
    content_sha        VARCHAR,            -- see session_sources
    calibration_source VARCHAR             -- 'file', or 'manifest' when session.yaml gave pixel_size_nm / energy_*
);

CREATE TABLE IF NOT EXISTS session_files (
    session_id         VARCHAR NOT NULL,
    role               VARCHAR NOT NULL,   -- manifest, haadf, eds, data, truth; '<role>+<i>' = a file a multi-file format (TIA .emi, JEOL .asw) reads
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
-- Region descriptors (mmlake.descriptors, mmlake.roles): written by the `region_descriptors` asset with
-- Lake.replace_partition(..., scope={"session_id": sid}) -- all three tables in one transaction, one
-- materialization_id. A region = the chips of one segmentation (method x modality) with one label.

CREATE TABLE IF NOT EXISTS regions (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,   -- louvain, agglomerative, fewshot, truth (ground truth), ...
    modality           VARCHAR NOT NULL,   -- haadf, eds, ensemble, ensemble_auto
    region             INTEGER NOT NULL,   -- the label
    role               VARCHAR,            -- substrate, film_ordered, film_disordered, cap, interface, film, unknown
    role_source        VARCHAR,            -- class_names (few-shot/truth), rule (clustering), manifest (roles:)
    role_reason        VARCHAR,            -- the numbers that decided the role
    n_chips            INTEGER NOT NULL,
    area_nm2           DOUBLE,             -- n_chips * (chip_px * pixel_size_nm)^2
    eds_counts         DOUBLE,             -- counts of the region's summed spectrum; NULL without EDS
    d_spacing_nm       DOUBLE,             -- lattice period of the FFT of the largest square inside the region
    d_spacing_unc_nm   DOUBLE,             -- width-based (resolution) uncertainty of it
    d_spacing_note     VARCHAR,            -- why d_spacing_nm is NULL (amorphous, single chip, square too small, no HAADF)
    lattice_strength   DOUBLE,             -- ln(peak/background ratio / lattice threshold) of the square; > 0 = lattice
    crystallinity      DOUBLE,             -- fraction of the region's chips whose FFT window shows a 2-D lattice
    square_px          INTEGER,            -- side of the largest square inside the region, px
    square_row         INTEGER,            -- its top-left chip (row, col)
    square_col         INTEGER,
    n_core_chips       INTEGER,            -- chips none of whose 8 neighbours carries another label (core)
    boundary_share     DOUBLE,             -- 1 - n_core_chips / n_chips: share of chips on the region's boundary
    core_eds_counts    DOUBLE,             -- counts of the core chips' summed spectrum
    d_spacing_se_nm    DOUBLE,             -- bootstrap standard error over non-overlapping chip tiles
    d_spacing_ci_low   DOUBLE,             -- 95 % bootstrap interval of d_spacing_nm (NULL: < 3 tiles)
    d_spacing_ci_high  DOUBLE,
    d_spacing_n_tiles  INTEGER,            -- tiles the bootstrap resampled
    superlattice_nm    DOUBLE,             -- largest d of superlattice reflections (never the d-spacing itself)
    pair_d_spacing_nm  DOUBLE,             -- the role's d-spacing pooled over the sample x dose's acquisitions
    pair_d_ci_low      DOUBLE,             -- its 95 % interval (bootstrap over acquisitions, then tiles)
    pair_d_ci_high     DOUBLE,
    pair_n_acquisitions INTEGER,           -- acquisitions pooled
    materialization_id VARCHAR NOT NULL
);

-- Cliff-Lorimer at.% of each region's SUMMED spectrum (exspy); one row per declared element plus
-- 'Extraneous' (every other quantified element), adding up to 100. NULL where the summed spectrum has
-- no counts. No rows for sessions without EDS.
CREATE TABLE IF NOT EXISTS region_composition (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    modality           VARCHAR NOT NULL,
    region             INTEGER NOT NULL,
    element            VARCHAR NOT NULL,
    atomic_percent     DOUBLE,             -- whole region (all its chips)
    counting_se        DOUBLE,             -- Poisson counting error through the fit and Cliff-Lorimer
    ci_low             DOUBLE,             -- 95 % bootstrap interval over the region's chips
    ci_high            DOUBLE,
    atomic_percent_core DOUBLE,            -- core chips only (no chip touching another label); NULL: no core
    counting_se_core   DOUBLE,
    ci_low_core        DOUBLE,
    ci_high_core       DOUBLE,
    pair_atomic_percent DOUBLE,            -- the region's ROLE composition pooled over the sample x dose's acquisitions
    pair_ci_low        DOUBLE,             -- its 95 % interval (bootstrap over acquisitions, then chips)
    pair_ci_high       DOUBLE,
    pair_n_acquisitions INTEGER,
    pair_basis         VARCHAR,            -- core or whole: which figures were pooled
    materialization_id VARCHAR NOT NULL
);

-- The preprint's comparison (II.B, Figs. 4-5): chip-weighted composition of all film_disordered vs all
-- film_ordered regions of one segmentation, percent_diff = 100 * (disordered - ordered) / ordered.
-- Rows only where a segmentation has both roles. The view `composition_shift` adds campaign/sample/dose.
CREATE TABLE IF NOT EXISTS ordered_disordered_shift (
    session_id           VARCHAR NOT NULL,
    method               VARCHAR NOT NULL,
    modality             VARCHAR NOT NULL,
    element              VARCHAR NOT NULL,
    ordered_at_pct       DOUBLE,
    disordered_at_pct    DOUBLE,
    percent_diff         DOUBLE,
    ordered_renorm_pct   DOUBLE,             -- the same compositions renormalised over the compared elements
    disordered_renorm_pct DOUBLE,            -- (La + Fe + O = 100): removes dilution by cap/substrate signal
    percent_diff_renorm  DOUBLE,
    ordered_n_chips      INTEGER,
    disordered_n_chips   INTEGER,
    ordered_n_regions    INTEGER,
    disordered_n_regions INTEGER,
    -- intervals: bootstrap over chips within each region (ci_level, 95 %); significant = interval excludes 0
    ci_low               DOUBLE,             -- of percent_diff (whole regions)
    ci_high              DOUBLE,
    significant          BOOLEAN,
    renorm_ci_low        DOUBLE,             -- of percent_diff_renorm
    renorm_ci_high       DOUBLE,
    ordered_at_pct_core  DOUBLE,             -- the same from core chips only (the default in the views)
    disordered_at_pct_core DOUBLE,
    percent_diff_core    DOUBLE,
    ci_low_core          DOUBLE,
    ci_high_core         DOUBLE,
    significant_core     BOOLEAN,
    ordered_renorm_pct_core DOUBLE,
    disordered_renorm_pct_core DOUBLE,
    percent_diff_renorm_core DOUBLE,
    renorm_ci_low_core   DOUBLE,
    renorm_ci_high_core  DOUBLE,
    ordered_n_core_chips INTEGER,
    disordered_n_core_chips INTEGER,
    ci_level             DOUBLE,
    pair_percent_diff    DOUBLE,             -- pooled over the sample x dose's acquisitions (mean of them)
    pair_ci_low          DOUBLE,             -- bootstrap over acquisitions, then chips
    pair_ci_high         DOUBLE,
    pair_significant     BOOLEAN,
    pair_n_acquisitions  INTEGER,
    pair_basis           VARCHAR,            -- core or whole
    materialization_id   VARCHAR NOT NULL
);


-- ============================================================ crystal (UniMat-style campaign)
-- Written by mmlake.crystal (see mmlake/crystal/pipeline.py). Each asset replaces its rows with
-- Lake.replace_partition(prov, {table: frame}, scope={"dataset": <name>}), where `dataset` names the CSV set
-- (e.g. 'mp20_excerpt', 'perov_5'). Frames come from <stage result>.table(dataset).

CREATE TABLE IF NOT EXISTS structures (
    dataset                   VARCHAR NOT NULL,
    material_id               VARCHAR NOT NULL,   -- CSV material_id (else '<file stem>:<row>')
    split                     VARCHAR,            -- train / val / test (file stem, or sha256(material_id) 60/20/20)
    source_file               VARCHAR,
    source_row                INTEGER,            -- 0-based data row in source_file
    formula                   VARCHAR,            -- pymatgen reduced formula
    elements                  VARCHAR[],
    n_sites                   INTEGER,
    n_elements                INTEGER,
    a                         DOUBLE,             -- Niggli-reduced cell (Å), a <= b <= c
    b                         DOUBLE,
    c                         DOUBLE,
    alpha                     DOUBLE,             -- deg
    beta                      DOUBLE,
    gamma                     DOUBLE,
    volume                    DOUBLE,             -- Å^3 of the cell as given
    density                   DOUBLE,             -- g/cm^3
    spacegroup_number         INTEGER,            -- spglib via pymatgen, symprec 0.1 Å, angle_tolerance 5 deg
    spacegroup_symbol         VARCHAR,
    crystal_system            VARCHAR,            -- triclinic ... cubic
    crystal_system_index      INTEGER,            -- 0 triclinic, 1 monoclinic, 2 orthorhombic, 3 tetragonal, 4 trigonal, 5 hexagonal, 6 cubic
    spacegroup_number_csv     INTEGER,            -- the CSV's spacegroup.number when present
    energy_target             DOUBLE,             -- formation_energy_per_atom, else heat_all (eV/atom); NULL if unavailable
    formation_energy_per_atom DOUBLE,
    heat_all                  DOUBLE,
    band_gap                  DOUBLE,
    e_above_hull              DOUBLE,
    cif                       VARCHAR,
    skip_reason               VARCHAR,            -- NULL = parsed; else why the CSV row was skipped (other columns NULL)
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS xrd_patterns (
    dataset                   VARCHAR NOT NULL,
    material_id               VARCHAR NOT NULL,
    split                     VARCHAR,
    row_index                 INTEGER,            -- row of the pattern matrix; NULL when the simulation failed
    n_peaks                   INTEGER,            -- sticks inside the 2-theta window
    strongest_two_theta       DOUBLE,
    strongest_d               DOUBLE,             -- Å
    strongest_hkl             VARCHAR,
    integrated_intensity      DOUBLE,             -- sum(smeared) * step before max-normalisation
    edge_loss_fraction        DOUBLE,             -- Gaussian mass that fell off the grid
    error                     VARCHAR,
    pattern_matrix_sha        VARCHAR,            -- .npy float32 (n_rows, n_points), max-normalised, rows by row_index
    wavelength                VARCHAR,            -- 'CuKa'
    sigma_deg                 DOUBLE,
    two_theta_min             DOUBLE,
    two_theta_max             DOUBLE,
    step_deg                  DOUBLE,
    n_points                  INTEGER,            -- grid = linspace(two_theta_min, two_theta_max, n_points)
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS composition_features (
    dataset                   VARCHAR NOT NULL,
    material_id               VARCHAR NOT NULL,
    split                     VARCHAR,
    formula                   VARCHAR,
    n_elements                INTEGER,
    n_imputed                 INTEGER,            -- elemental values imputed for this composition
    imputed                   VARCHAR[],          -- 'He.Electronegativity', ...
    features                  FLOAT[],            -- Magpie-style, order = composition_feature_names.position (1-based)
    skip_reason               VARCHAR,            -- NULL = featurised
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS composition_feature_names (
    dataset                   VARCHAR NOT NULL,
    position                  INTEGER NOT NULL,   -- 1-based index into composition_features.features
    feature                   VARCHAR NOT NULL,   -- e.g. 'avg_dev_Electronegativity'
    property                  VARCHAR NOT NULL,
    stat                      VARCHAR NOT NULL,   -- mean / avg_dev / min / max / range / mode / L<p>
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS crystal_models (
    dataset                   VARCHAR NOT NULL,
    variant                   VARCHAR NOT NULL,   -- xrd / composition / fused
    model_name                VARCHAR NOT NULL,   -- unimat_<variant>
    model_version             VARCHAR NOT NULL,
    weights_sha256            VARCHAR NOT NULL,   -- lake object (.pt, torch.save({'config','state_dict'}))
    weights_bytes             BIGINT,
    params                    JSON,               -- TrainParams
    seed                      INTEGER,
    device                    VARCHAR,
    n_train                   INTEGER,
    epochs_run                INTEGER,
    best_epoch                INTEGER,
    best_val_task_loss        DOUBLE,
    final_train_loss          DOUBLE,
    train_seconds             DOUBLE,
    tasks                     JSON,               -- task -> NULL (available) or why not
    history                   JSON,               -- per-epoch losses
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS crystal_benchmark (
    dataset                   VARCHAR NOT NULL,
    variant                   VARCHAR NOT NULL,   -- baseline / xrd / composition / fused
    metric                    VARCHAR NOT NULL,   -- lengths_mae, angles_mae, a_mae, b_mae, c_mae, energy_mae, crystal_system_acc, silhouette
    crystal_system            VARCHAR,            -- NULL = all test rows; else per-system accuracy (Table 3)
    value                     DOUBLE,             -- NULL when the task is unavailable
    unit                      VARCHAR,
    n                         INTEGER,            -- test rows behind the value
    preprint_value            DOUBLE,             -- UniMat preprint Table 2/3 (full MP-20), NULL if none
    weights_sha256            VARCHAR,            -- the crystal_models row evaluated (NULL for baseline)
    materialization_id        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS crystal_reference_spacings (
    dataset                   VARCHAR,            -- structures set searched for the formula (NULL = idealised only)
    phase                     VARCHAR NOT NULL,   -- LaFeO3, SrTiO3, ...
    formula                   VARCHAR NOT NULL,
    source                    VARCHAR NOT NULL,   -- 'idealised cubic perovskite' or 'data:<material_id>'
    material_id               VARCHAR,
    crystal_system            VARCHAR,
    a_ang                     DOUBLE,
    h                         INTEGER,
    k                         INTEGER,
    l                         INTEGER,
    hkl                       VARCHAR,            -- '(1 1 0)'
    d_ang                     DOUBLE NOT NULL,    -- interplanar spacing (Å), compare with STEM FFT d-spacings
    multiplicity              INTEGER,
    two_theta_cu_deg          DOUBLE,
    xrd_rel_intensity         DOUBLE,             -- 0-100
    note                      VARCHAR,
    materialization_id        VARCHAR NOT NULL
);

-- Which known phase a STEM region role stands for, per campaign (NULL campaign = every campaign).
-- The view `phase_d_spacing` uses it to put reference d(hkl) from pymatgen beside measured FFT
-- d-spacings. Add rows for your own campaigns: insert into phase_roles values ('my_campaign', 'film_ordered', 'BaTiO3').
CREATE TABLE IF NOT EXISTS phase_roles (
    campaign VARCHAR,
    role     VARCHAR NOT NULL,
    phase    VARCHAR NOT NULL
);
INSERT INTO phase_roles
SELECT * FROM (VALUES (NULL, 'substrate', 'SrTiO3'), (NULL, 'film_ordered', 'LaFeO3'),
                      (NULL, 'film_disordered', 'LaFeO3')) AS v(campaign, role, phase)
WHERE NOT EXISTS (SELECT 1 FROM phase_roles);

-- Interactive campaign reports (plotly HTML, self-contained) written by the `campaign_reports` asset.
CREATE TABLE IF NOT EXISTS campaign_reports (
    kind               VARCHAR NOT NULL,   -- 'campaign_html'
    campaign           VARCHAR NOT NULL,
    path               VARCHAR NOT NULL,   -- under the lake folder: reports/<campaign>.html
    sha256             VARCHAR NOT NULL,
    n_sessions         INTEGER,
    materialization_id VARCHAR NOT NULL
);

-- ============================================================================================
-- Encoder models trained on a campaign's own chips (asset `ssl_encoder`, mmlake.encoders.ssl).
-- The checkpoint is a lake object (objects/<sha[:2]>/<sha>.pt: torch.save of {state_dict, params});
-- haadf_embeddings uses the campaign's newest row when `ssl` is among the HAADF encoders and no
-- `ssl_weights` file is configured. All columns but materialization_id are nullable.
CREATE TABLE IF NOT EXISTS encoder_models (
    encoder            VARCHAR,      -- 'ssl'
    campaign           VARCHAR,
    checkpoint_sha     VARCHAR,      -- lake object with the checkpoint bytes
    weights_id         VARCHAR,      -- sha256:<hex> of the state dict (what embeddings record)
    train_version      VARCHAR,
    params             VARCHAR,      -- JSON: training parameters actually used
    sessions           VARCHAR,      -- JSON: per session id: chips seen, window, period, counts gain, chips data version
    chips_upstream     VARCHAR,      -- JSON: chips materialization ids + data versions it was trained on
    loss_curve         VARCHAR,      -- JSON: [{step, loss, view_nce, cross_modal_nce}, ...]
    final_loss         DOUBLE,
    n_chips            INTEGER,
    train_seconds      DOUBLE,
    device             VARCHAR,
    trained_at         TIMESTAMPTZ,
    materialization_id VARCHAR NOT NULL
);

-- ============================================================================================
-- Atomic columns and order parameters (asset `atom_columns`, mmlake.atoms). Per session: one row
-- per column found in the HAADF image (pixels and nm; y = row, down; x = column, right; the image the
-- chip grid covers, scan-line corrected) and one row per chip of the order parameters computed from
-- the columns in a window centred on the chip. All columns but the keys are nullable.
CREATE TABLE IF NOT EXISTS atom_columns (
    session_id          VARCHAR NOT NULL,
    column_index        INTEGER NOT NULL,   -- 0..n-1, sorted by (y, x)
    y_px                DOUBLE,
    x_px                DOUBLE,
    y_nm                DOUBLE,             -- NULL without a pixel size
    x_nm                DOUBLE,
    chip_index          INTEGER,            -- chip holding the column (row * n_cols + col); NULL outside the grid
    amplitude           DOUBLE,             -- fitted Gaussian peak above the local background
    sigma_px            DOUBLE,
    intensity           DOUBLE,             -- 2 pi amplitude sigma^2
    background          DOUBLE,
    fit_ok              BOOLEAN,
    sublattice          VARCHAR,            -- 'A' (bright) / 'B' (dim); all 'A' when one kind of column is found
    sublattice_contrast DOUBLE,             -- ln I - median ln I of the first-shell neighbours
    nn_distance_px      DOUBLE,
    nn_distance_nm      DOUBLE,
    lattice_fit         BOOLEAN,            -- the column's neighbours index a local lattice
    n_neighbours        INTEGER,
    lattice_residual_px DOUBLE,
    displacement_y_px   DOUBLE,             -- observed - ideal position from the neighbours' local lattice
    displacement_x_px   DOUBLE,
    displacement_px     DOUBLE,
    displacement_nm     DOUBLE,
    a1_y_px             DOUBLE,             -- local basis vectors
    a1_x_px             DOUBLE,
    a2_y_px             DOUBLE,
    a2_x_px             DOUBLE,
    strain_exx          DOUBLE,             -- vs the image's median lattice
    strain_eyy          DOUBLE,
    strain_exy          DOUBLE,
    rotation_deg        DOUBLE,             -- counter-clockwise on screen
    materialization_id  VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS chip_order (
    session_id           VARCHAR NOT NULL,
    chip_index           INTEGER NOT NULL,   -- row * n_cols + col
    row                  INTEGER,
    col                  INTEGER,
    n_columns            INTEGER,            -- columns in the chip-centred window
    n_lattice            INTEGER,            -- of which their local lattice fits
    lattice_fraction     DOUBLE,
    rms_displacement_px  DOUBLE,             -- RMS distance from the locally fitted ideal lattice
    rms_displacement_nm  DOUBLE,
    rms_displacement_rel DOUBLE,             -- over the reference lattice spacing (Lindemann-like)
    nn_distance_mean_px  DOUBLE,
    nn_distance_mean_nm  DOUBLE,
    nn_distance_cv       DOUBLE,             -- std / mean of nearest-neighbour distances
    intensity_cv_a       DOUBLE,             -- robust CV (1.4826 MAD / median) of A-site intensities
    intensity_cv_b       DOUBLE,
    strain_exx           DOUBLE,
    strain_eyy           DOUBLE,
    strain_exy           DOUBLE,
    rotation_deg         DOUBLE,
    strain_spread        DOUBLE,             -- std of the dilatation over the window's fitting columns
    disorder             DOUBLE,             -- 0 perfect lattice .. 1 no lattice (mmlake.atoms.order)
    window_px            DOUBLE,
    materialization_id   VARCHAR NOT NULL
);

-- Order parameters per region (asset `region_order`, mmlake.atoms.region): per session x
-- segmentation (method, modality; method 'truth' = the generator's ground truth) x region x
-- chip_order parameter, the mean over the region's chips with a percentile bootstrap interval over
-- chips (n_boot resamples, seed: a pure function of the inputs). NULL interval: < 3 chips.
CREATE TABLE IF NOT EXISTS region_order (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    modality           VARCHAR NOT NULL,
    region             INTEGER NOT NULL,
    role               VARCHAR,            -- the region's role (regions.role)
    parameter          VARCHAR NOT NULL,   -- a chip_order column (disorder, rms_displacement_nm, ...)
    n_chips            INTEGER,            -- chips of the region that carry the parameter
    mean               DOUBLE,
    ci_low             DOUBLE,
    ci_high            DOUBLE,
    level              DOUBLE,
    n_boot             INTEGER,
    seed               INTEGER,
    materialization_id VARCHAR NOT NULL
);

-- "The disordered film has N times the column displacement of the ordered film": per session x
-- segmentation x parameter, mean over every film_disordered chip / mean over every film_ordered chip
-- (regions of one role pooled), bootstrap interval of the ratio; significant = interval excludes 1.
CREATE TABLE IF NOT EXISTS order_contrast (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    modality           VARCHAR NOT NULL,
    parameter          VARCHAR NOT NULL,
    disordered_mean    DOUBLE,
    ordered_mean       DOUBLE,
    ratio              DOUBLE,
    ci_low             DOUBLE,
    ci_high            DOUBLE,
    significant        BOOLEAN,
    n_disordered       INTEGER,
    n_ordered          INTEGER,
    level              DOUBLE,
    n_boot             INTEGER,
    seed               INTEGER,
    materialization_id VARCHAR NOT NULL
);
