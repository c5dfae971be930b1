"""Use a trained model: classify image files, export it for serving (SavedModel, TFLite), check the export.

It sits beside training/ and analysis/: it loads runs (loading.run_loader), reads images through
data.decode (the conversion the datasets use) and never imports training/ or analysis/.
"""
