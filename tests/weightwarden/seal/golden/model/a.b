a.b sorts after a/b
