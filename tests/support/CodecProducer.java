// Kafka's own Java producer, for tests that need records written by a
// client other than ours: CodecProducer BOOTSTRAP TOPIC CODEC FILE, where
// FILE has one record per line, KEY<TAB>VALUE. Run as a single source file
// (`java -cp 'libs/*' CodecProducer.java ...`); exits non-zero unless every
// record is acknowledged.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class CodecProducer {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("compression.type", args[2]);
        p.put("acks", "all");
        // Several records per batch, so the codec compresses a real batch.
        p.put("linger.ms", "50");
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (String line : Files.readAllLines(Path.of(args[3]))) {
                int tab = line.indexOf('\t');
                sent.add(producer.send(new ProducerRecord<>(args[1], line.substring(0, tab), line.substring(tab + 1))));
            }
            producer.flush();
            for (Future<RecordMetadata> f : sent) {
                f.get();
            }
        }
        System.out.println("sent " + sent.size() + " records with " + args[2]);
    }
}
