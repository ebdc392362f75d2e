# Twisted plugin drop-in for twistls (no logic here; see twistls.endpoints).
# There is deliberately no __init__.py in twisted/ or twisted/plugins/.
