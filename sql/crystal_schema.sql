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
