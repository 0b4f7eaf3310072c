// Java: a resource string, a field set at run time and a method call beside constants.
import okhttp3.CertificatePinner;

class Pinning {
    static final String HOST = "api.example.com";
    static final String LEAF = "sha256/adArOhgPp1XK542znr5ECThlgeKq5oRCrecSF72KWfs=";
    static final String BACKUP = "sha256/xjFg2je3/YWZqCESIgk8DErgWQX5k4xZRC135qW9tEw=";
    static String rotated;  // not final: assigned at run time

    CertificatePinner pinner(Resources res) {
        return new CertificatePinner.Builder()
            .add(HOST, LEAF, BACKUP, rotated)
            .add("cdn.example.com", res.getString(R.string.cdn_pin), pinFor("cdn"))
            .build();
    }
}
