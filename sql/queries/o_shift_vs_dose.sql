-- Question: how does the O shift in disordered regions change with dose, per method, across campaigns?
-- The percent difference 100 * (disordered - ordered) / ordered of the O content (chip-weighted over the
-- regions of each role) per campaign, sample, dose and method, for the multi-modal (ensemble) labelling
-- where there is one, and its change against the same sample's lowest dose.
SELECT campaign, sample, dose_dpa, method, modality,
       round(ordered_at_pct, 2)        AS o_ordered_at_pct,
       round(disordered_at_pct, 2)     AS o_disordered_at_pct,
       round(percent_diff, 2)          AS o_shift_pct,
       round(percent_diff_renorm, 2)   AS o_shift_renorm_pct,  -- over La+Fe+O only (no cap/substrate dilution)
       round(change_vs_lowest_dose, 2) AS o_shift_change_vs_lowest_dose
FROM composition_shift
WHERE element = 'O'
  AND (modality = 'ensemble'
       OR NOT EXISTS (SELECT 1 FROM composition_shift c2
                      WHERE c2.session_id = composition_shift.session_id
                        AND c2.method = composition_shift.method AND c2.modality = 'ensemble'))
ORDER BY campaign, sample, method, modality, dose_dpa;
