"""Ray Serve application: price prediction and exact SHAP explanations over HTTP."""
