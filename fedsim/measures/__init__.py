"""What fedsim measures: classification metrics (``metrics``) and model heterogeneity
(``heterogeneity``)."""
