-- Question: what is the d-spacing of the ordered film in each session, per method and modality?
-- Regions with role film_ordered; where a labelling has several ordered regions their d-spacings are
-- averaged weighted by chips (regions without a measurable d-spacing are counted, not averaged).
SELECT s.campaign, s.sample, s.dose_dpa, r.method, r.modality,
       count(*)                                                  AS ordered_regions,
       sum(r.n_chips)                                            AS ordered_chips,
       round(sum(r.d_spacing_nm * r.n_chips) FILTER (WHERE r.d_spacing_nm IS NOT NULL)
             / sum(r.n_chips) FILTER (WHERE r.d_spacing_nm IS NOT NULL), 4) AS d_spacing_nm,
       round(max(r.d_spacing_unc_nm), 4)                         AS max_unc_nm,
       count(*) FILTER (WHERE r.d_spacing_nm IS NULL)            AS regions_without_d
FROM regions AS r
JOIN sessions AS s USING (session_id)
WHERE r.role = 'film_ordered'
GROUP BY ALL
ORDER BY s.campaign, s.sample, s.dose_dpa, r.method, r.modality;
