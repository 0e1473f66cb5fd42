-- Question: what are the La, Fe and O contents of the ordered and disordered film in each session and
-- method (the bars of the preprint's Figs. 4-5)? Chip-weighted over the regions of each role.
SELECT campaign, sample, dose_dpa, method, modality, role, element,
       round(sum(atomic_percent * n_chips) / sum(n_chips), 2) AS atomic_percent,
       sum(n_chips)                                           AS chips,
       count(DISTINCT region)                                 AS regions
FROM descriptors
WHERE role IN ('film_ordered', 'film_disordered')
  AND element IN ('La', 'Fe', 'O')
  AND atomic_percent IS NOT NULL
GROUP BY ALL
ORDER BY campaign, sample, dose_dpa, method, modality, element, role DESC;
